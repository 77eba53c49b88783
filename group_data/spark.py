"""The DGX Spark hosts (see inventory.py for where their addresses come from).

Defaults (sparkstack/groups.py): plan against the host's live MemTotal, give the
containers the GPUs, bind endpoints to loopback.
"""

# NVIDIA dgx-spark-playbooks: drop page caches before big loads on unified memory.
sparkstack_drop_caches = True
