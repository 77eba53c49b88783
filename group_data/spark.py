"""The DGX Spark hosts (see inventory.py for where their addresses come from)."""

# Plan against the host's live MemTotal during a deploy (128 GB offline).
sparkstack_unified_memory_gb = None
sparkstack_gpus = True
sparkstack_drop_caches = True
