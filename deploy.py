"""Provision a DGX Spark (or the test VM) from the YAML model profiles.

    pyinfra inventory.py deploy.py            # apply
    pyinfra inventory.py deploy.py --dry      # show what would change
    sparkstack drift                          # the same dry run, as a CI gate

Profiles are validated and the memory plan is made before any host is touched; the
deployers, one per host component, are in sparkstack/deployers/.
"""

from sparkstack.deployers import deploy_sparkstack

deploy_sparkstack()
