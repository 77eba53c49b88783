"""Take back from a host what deploy.py put there; images, weights and the secrets file only on request.

    sparkstack uninstall --limit HOST [--images] [--weights] [--secrets]
    sparkstack drift --uninstalled --limit HOST    # clean: nothing of sparkstack is left

The operations are in sparkstack/deployers/uninstall.py.
"""

from sparkstack.deployers import uninstall_sparkstack

uninstall_sparkstack()
