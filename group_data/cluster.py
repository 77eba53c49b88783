"""A group of DGX Sparks that form one cluster (see inventory.py: SPARKSTACK_CLUSTER_HOSTS).

Each host gets every single-node model, as in the `spark` group. Cluster profiles (a `cluster:` section,
e.g. glm51) are placed by the memory plan on these nodes, each holding its share. Once the group names its
nodes below, a deploy gives each node its rank's launch script and unit and the head the group switch
(`llm-switch glm51` on the head starts every rank; README, "Several Sparks").
"""

# NVIDIA's stacking playbooks connect two Sparks directly; four need a switch. Set it to the hosts you have.
sparkstack_cluster_nodes = 4

# The nodes in rank order, head first: inventory name -> its address on the interconnect, and the interface
# that carries those addresses (the same name on every node). Both come from how you cabled and addressed
# the Sparks (NVIDIA's dgx-spark-playbooks); sparkstack does not guess them. For example:
#
#   sparkstack_cluster_addresses = {"spark-1": "192.168.100.1", "spark-2": "192.168.100.2",
#                                   "spark-3": "192.168.100.3", "spark-4": "192.168.100.4"}
#   sparkstack_cluster_interface = "<the ConnectX port's name, from `ip -br addr`>"
#
# Optional: sparkstack_cluster_master_port (vLLM's default 29501) and sparkstack_cluster_env for what
# depends on the hardware, e.g. {"NCCL_IB_HCA": "<RoCE device names>"}.
