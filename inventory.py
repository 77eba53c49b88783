"""Where sparkstack deploys.

spark   the DGX Sparks, from SPARKSTACK_SPARK_HOSTS: comma-separated ssh targets, each an
        ssh alias from ~/.ssh/config or user@address, e.g.
            export SPARKSTACK_SPARK_HOSTS=spark-1
        The deploy needs root: connect as root or add --sudo.
cluster the DGX Sparks that form one cluster, from SPARKSTACK_CLUSTER_HOSTS (same form as
        SPARKSTACK_SPARK_HOSTS); group_data/cluster.py says how many nodes the plan counts on.
testhost  the test host (node 1) while `sparkstack testhost up` has it running (a systemd container, or
        the QEMU VM with --driver vm).
testcluster  the test host's nodes as one cluster group, while they run: testcluster-head is node 1 and
        testcluster-worker node 2 (`sparkstack testhost up --nodes 2`), testcluster-node3 and -node4 the
        third and fourth (--nodes 4) when SPARKSTACK_TEST_CLUSTER_NODES=4.
"""

import os
import sys

from sparkstack import testhost as _testhost

_HOW_TO = """sparkstack inventory: no hosts configured.
  - a real Spark:  export SPARKSTACK_SPARK_HOSTS=<ssh alias or user@address>[,...]
  - a test host:   sparkstack testhost up
"""


def _spark_hosts(variable: str = "SPARKSTACK_SPARK_HOSTS"):
    hosts = []
    for target in filter(None, (t.strip() for t in os.environ.get(variable, "").split(","))):
        user, _, address = target.rpartition("@")
        hosts.append((target, {"ssh_hostname": address, **({"ssh_user": user} if user else {})}))
    return hosts


spark = (_spark_hosts(), {})
cluster = (_spark_hosts("SPARKSTACK_CLUSTER_HOSTS"), {})
_main = _testhost.inventory_entry()
testhost = ([_main] if _main else [], {})
_CLUSTER_NAMES = ["testcluster-head", "testcluster-worker", "testcluster-node3", "testcluster-node4"]
_cluster_size = int(os.environ.get("SPARKSTACK_TEST_CLUSTER_NODES", "2"))
_cluster_nodes = [_testhost.inventory_entry("" if n == 1 else str(n), _CLUSTER_NAMES[n - 1])
                  for n in range(1, _cluster_size + 1)] if _main else []
testcluster = (_cluster_nodes if _cluster_nodes and all(_cluster_nodes) else [], {})

if not spark[0] and not cluster[0] and not testhost[0]:
    sys.stderr.write(_HOW_TO)
    sys.exit(2)
