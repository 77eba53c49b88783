"""A group of DGX Sparks that form one cluster (see inventory.py: SPARKSTACK_CLUSTER_HOSTS).

Each host also gets every single-node model, as in the `spark` group. Cluster profiles (a
`cluster:` section, e.g. glm51) are placed by the memory plan on these nodes, each holding its
share; per-node rendering and a switch for the whole group are not built yet, so a deploy
installs none of them.
"""

# NVIDIA's stacking playbooks connect two Sparks directly; four need a switch. Set it to the hosts you have.
sparkstack_cluster_nodes = 4
