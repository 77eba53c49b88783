"""The two test VMs as one cluster group: the test VM is the head, `sparkstack testvm up --worker` the worker.

Everything the test VM's group sets (the stand-in engine, the registry and hub, the scaled memory figures)
applies unchanged: it is read from group_data/testvm.py. What is added is the cluster: two nodes on the
VMs' private link (a qemu socket netdev; sparkstack/testvm.py gives the addresses). The tests deploy it
with their own profile set (SPARKSTACK_MODELS_DIR=tests/vm/cluster_models), whose cluster model is spread
over two nodes (glm51-pair natively, glm51-ray over Ray); with the shipped profiles the plan places nothing here (GLM-5.1 needs four).
The group's lock, group_data/testcluster.lock.json, is written by the tests and never committed.
"""

import runpy as _runpy

from sparkstack.paths import group_data_dir as _group_data_dir

globals().update({k: v for k, v in _runpy.run_path(str(_group_data_dir() / "testvm.py")).items()
                  if k.startswith("sparkstack_")})

# The stand-in with Ray from PyPI in it (tests/standin_engine/image.py), for the Ray backend's model.
sparkstack_image_overrides = {**sparkstack_image_overrides,  # noqa: F821 (read from testvm.py above)
                              "vllm": "127.0.0.1:5000/sparkstack/standin-engine-ray:latest"}
sparkstack_cluster_nodes = 2
sparkstack_cluster_addresses = {"testcluster-head": "10.77.0.1", "testcluster-worker": "10.77.0.2"}
sparkstack_cluster_interface = "eth1"
