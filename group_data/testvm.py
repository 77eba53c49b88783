"""The test VM that `sparkstack testvm up` boots: a GPU-less stand-in for a Spark.

Only what a GPU-less host cannot take is changed here: the model images become the
stand-in engine (tests/standin_engine/, a local image built without a registry, which
accepts the same command lines), and `--gpus all` is dropped. Every other flag, env var
and label is rendered exactly as for a Spark.
"""

_STANDIN_ENGINE_IMAGE = "sparkstack-standin-engine:latest"

sparkstack_image_overrides = {"vllm": _STANDIN_ENGINE_IMAGE, "sglang": _STANDIN_ENGINE_IMAGE}
sparkstack_gpus = False

# Plan as the Spark this VM stands in for: the stand-in engine allocates no model memory.
sparkstack_unified_memory_gb = 128.0

# llm-switch still gates each start on MemAvailable, scaled to the 2 GB VM: 1/100 of the
# profile's figures (qwen36: 0.67 GB + 0.08 GB reserve).
sparkstack_switch_memory_scale = 0.01
sparkstack_memory_settle_timeout_s = 20
sparkstack_switch_lock_wait_s = 300
