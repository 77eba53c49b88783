"""Where sparkstack deploys.

spark   the DGX Sparks, from SPARKSTACK_SPARK_HOSTS: comma-separated ssh targets, each an
        ssh alias from ~/.ssh/config or user@address, e.g.
            export SPARKSTACK_SPARK_HOSTS=spark-1
        The deploy needs root: connect as root or add --sudo.
testvm  the test VM while `sparkstack testvm up` has it running.
"""

import os
import sys

from sparkstack import testvm as _testvm

_HOW_TO = """sparkstack inventory: no hosts configured.
  - a real Spark:  export SPARKSTACK_SPARK_HOSTS=<ssh alias or user@address>[,...]
  - the test VM:   sparkstack testvm up
"""


def _spark_hosts():
    hosts = []
    for target in filter(None, (t.strip() for t in os.environ.get("SPARKSTACK_SPARK_HOSTS", "").split(","))):
        user, _, address = target.rpartition("@")
        hosts.append((target, {"ssh_hostname": address, **({"ssh_user": user} if user else {})}))
    return hosts


spark = (_spark_hosts(), {})
_vm = _testvm.inventory_entry()
testvm = ([_vm] if _vm else [], {})

if not spark[0] and not testvm[0]:
    sys.stderr.write(_HOW_TO)
    sys.exit(2)
