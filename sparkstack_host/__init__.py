"""What runs on the Spark: the switch, the cluster switch, the memory gate and guard, the fetcher and the door.

Standard library only (the door also uses the distribution's aiohttp), and never an import of the kit
(`sparkstack`): the kit renders, this package runs. The kit and this package share one contract,
sparkstack_host/contract.py. The deploy installs the package under /usr/local/lib/sparkstack; the programs at
the usual paths (files/*) are shims into it.
"""
