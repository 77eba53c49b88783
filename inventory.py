"""Where sparkstack deploys.

spark   the DGX Sparks, from SPARKSTACK_SPARK_HOSTS: comma-separated ssh targets, each an
        ssh alias from ~/.ssh/config or user@address, e.g.
            export SPARKSTACK_SPARK_HOSTS=spark-1
        The deploy needs root: connect as root or add --sudo.
cluster the DGX Sparks that form one cluster, from SPARKSTACK_CLUSTER_HOSTS (same form as
        SPARKSTACK_SPARK_HOSTS); group_data/cluster.py says how many nodes the plan counts on.
testvm  the test VM while `sparkstack testvm up` has it running.
testcluster  the two test VMs as one cluster group (testcluster-head is the test VM, testcluster-worker
        the second VM, `sparkstack testvm up --worker`), while both run.
"""

import os
import sys

from sparkstack import testvm as _testvm

_HOW_TO = """sparkstack inventory: no hosts configured.
  - a real Spark:  export SPARKSTACK_SPARK_HOSTS=<ssh alias or user@address>[,...]
  - the test VM:   sparkstack testvm up
"""


def _spark_hosts(variable: str = "SPARKSTACK_SPARK_HOSTS"):
    hosts = []
    for target in filter(None, (t.strip() for t in os.environ.get(variable, "").split(","))):
        user, _, address = target.rpartition("@")
        hosts.append((target, {"ssh_hostname": address, **({"ssh_user": user} if user else {})}))
    return hosts


spark = (_spark_hosts(), {})
cluster = (_spark_hosts("SPARKSTACK_CLUSTER_HOSTS"), {})
_vm = _testvm.inventory_entry()
testvm = ([_vm] if _vm else [], {})
_cluster_vms = [_testvm.inventory_entry(_testvm.MAIN, "testcluster-head"),
                _testvm.inventory_entry(_testvm.WORKER, "testcluster-worker")]
testcluster = (_cluster_vms if all(_cluster_vms) else [], {})

if not spark[0] and not cluster[0] and not testvm[0]:
    sys.stderr.write(_HOW_TO)
    sys.exit(2)
