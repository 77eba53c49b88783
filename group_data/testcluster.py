"""The test host's nodes as one cluster group: node 1 is the head, nodes 2.. the workers (`sparkstack testhost up --nodes N`).

Everything the test VM's group sets (the stand-in engine, the registry and hub, the scaled memory figures)
applies unchanged: it is read from group_data/testhost.py. What is added is the cluster: two nodes (four
with SPARKSTACK_TEST_CLUSTER_NODES=4) on the nodes' private link, 10.77.0.N on eth1 (sparkstack/testhost.py). The tests deploy it
with their own profile set (SPARKSTACK_MODELS_DIR=tests/hosts/cluster_models), whose cluster model is spread
over two nodes (glm51-pair natively, glm51-ray over Ray); with the shipped profiles the plan places nothing here (GLM-5.1 needs four).
The group's lock, group_data/testcluster.lock.json, is written by the tests and never committed.
"""

import os as _os
import runpy as _runpy

from sparkstack.paths import group_data_dir as _group_data_dir

globals().update({k: v for k, v in _runpy.run_path(str(_group_data_dir() / "testhost.py")).items()
                  if k.startswith("sparkstack_")})

# The stand-in with Ray from PyPI in it (tests/standin_engine/image.py), for the Ray backend's model.
sparkstack_image_overrides = {**sparkstack_image_overrides,  # noqa: F821 (read from testhost.py above)
                              "vllm": "127.0.0.1:5000/sparkstack/standin-engine-ray:latest"}
sparkstack_cluster_nodes = int(_os.environ.get("SPARKSTACK_TEST_CLUSTER_NODES", "2"))
sparkstack_cluster_addresses = {name: f"10.77.0.{n}" for n, name in enumerate(
    ["testcluster-head", "testcluster-worker", "testcluster-node3", "testcluster-node4"][:sparkstack_cluster_nodes], 1)}
sparkstack_cluster_interface = "eth1"
