"""The test host that `sparkstack testhost up` starts (a systemd container, or the VM): a GPU-less stand-in for a Spark.

Only what a GPU-less host cannot take is changed here: the model images become the
stand-in engine (tests/standin_engine/, which accepts the same command lines), served by
the VM's own registry, the model repos come from the VM's own Hugging Face-compatible
hub, and `--gpus all` is dropped. Every other flag, env var and label is rendered exactly
as for a Spark. The registry (Debian's docker-registry) and the hub (olah) run on the
test machine's loopback and reach the VM's loopback through ssh (tests/artifact_servers.py).
The group's lock, group_data/testhost.lock.json, is written by the tests (`sparkstack lock
--host sparkstack-testhost`) and never committed: its pins exist only on the test machine.
"""

import json as _json
import os as _os

_STANDIN_ENGINE_IMAGE = "127.0.0.1:5000/sparkstack/standin-engine:latest"
sparkstack_hf_endpoint = "http://127.0.0.1:5080"
# The test repos are megabytes; the VM's disk is a few GB.
sparkstack_disk_margin_gb = 0.05

sparkstack_image_overrides = {"vllm": _STANDIN_ENGINE_IMAGE, "sglang": _STANDIN_ENGINE_IMAGE}
sparkstack_gpus = False

# Plan as the Spark this VM stands in for: the stand-in engine allocates no model memory.
sparkstack_unified_memory_gb = 128.0

# The memory gate, the memory guard and earlyoom still run, scaled to the 2 GB VM: 1/100 of the
# figures (qwen36: 0.67 GB + 0.08 GB reserve; earlyoom 5 MiB / 1 MiB, so it never fires here).
sparkstack_switch_memory_scale = 0.01
sparkstack_memory_wait_s = 30
# The guard's floor, scaled like the rest: 30 GB x 0.01 = 0.3 GB. The Spark default (10 GB) would scale
# to 0.1 GB, too close to the VM's own needs to drive it there safely in a test.
sparkstack_memory_guard_floor_gb = 30.0
# The plan's fit threshold is that floor (a model the guard would stop does not fit), so the reserve is what the
# 30 GB floor leaves for it with the shipped mistral4 (0.75 x 128 = 96 GB claimed): 2 GB, 0.02 GB on the VM.
sparkstack_os_reserve_gb = 2.0
sparkstack_switch_lock_wait_s = 300

# The front door, scaled for the VM: a model stays hot at least 20 s, a request is held up to 120 s while
# its model loads. The front door tests deploy this group once more with the door exposed (its key in the
# secrets file) and switching on demand (tests/hosts/test_8_frontdoor.py), then as it is here again.
sparkstack_frontdoor_min_hot_s = 20
sparkstack_frontdoor_hold_s = 120
sparkstack_frontdoor_expose = _os.environ.get("SPARKSTACK_TEST_FRONTDOOR_EXPOSE") == "1"
sparkstack_frontdoor_on_demand = _os.environ.get("SPARKSTACK_TEST_FRONTDOOR_ON_DEMAND") == "1"
sparkstack_frontdoor_tls = _os.environ.get("SPARKSTACK_TEST_FRONTDOOR_TLS") == "1"

# The test hosts have no GPU: the baseline records what they have, and these GPU facts as a fixture (a driver
# version the sources name, ../shared/PLATFORM.md), so the known-bad checks run against something.
sparkstack_baseline_fixture = {"nvidia.driver": "580.173.02", "nvidia.flavour": "proprietary"}

# A test's own settings for one deploy, as JSON (tests/hosts/test_8_frontdoor.py: a set of models, client keys, caps).
globals().update({f"sparkstack_{name}": value
                  for name, value in _json.loads(_os.environ.get("SPARKSTACK_TEST_GROUP_DATA") or "{}").items()})
