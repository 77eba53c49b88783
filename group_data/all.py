"""Settings every sparkstack host group shares; a group's own file overrides them.

pyinfra loads this file as group data; `sparkstack render/plan` loads it the same way.
The model profiles live in group_data/models/*.yaml and are read by sparkstack itself
(pyinfra's group data loader only reads *.py).
"""

# Memory kept free for the OS, desktop and docker. Seed 000/001: on a 128 GB Spark qwen36 uses
# ~67 GB with 53 GB headroom, which leaves 128 - 67 - 53 = 8 GB outside the model.
sparkstack_os_reserve_gb = 8.0

# Unified memory to plan against, in GB. None: read MemTotal from the host during a deploy
# (and assume a Spark's 128 GB when planning offline with `sparkstack plan/render`).
sparkstack_unified_memory_gb = None

# Endpoints bind to 127.0.0.1 unless a group exposes them; exposing needs VLLM_API_KEY in
# /etc/sparkstack/secrets.env on the host (the deploy refuses otherwise).
sparkstack_expose = False

# Model containers get the GPUs (`--gpus all`); the deploy checks the NVIDIA container runtime.
sparkstack_gpus = True

# NVIDIA dgx-spark-playbooks advise `sync; echo 3 > /proc/sys/vm/drop_caches` before big loads
# on unified memory; llm-switch does it before each start when this is True.
sparkstack_drop_caches = False

# None: every profile the memory plan admits. A list pins exactly these profiles (and a pinned
# profile that cannot fit stops the deploy).
sparkstack_models = None

# Host directory mounted as the containers' Hugging Face cache.
sparkstack_model_cache_dir = "/var/lib/sparkstack/huggingface"

# How long a switch waits for another switch's lock, and for memory to settle after a stop
# (engines release unified memory 30-120 s after `docker stop`, BRIEF "community Spark stacks").
sparkstack_switch_lock_wait_s = 600
sparkstack_memory_settle_timeout_s = 180
