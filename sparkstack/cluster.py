"""A cluster group's nodes: who is rank 0, which address each rank uses on the interconnect.

A cluster profile (`cluster:` in its YAML) runs as one rank per node, one GPU per Spark. The group
names its nodes in rank order (`sparkstack_cluster_addresses`, head first) and its interconnect
(`sparkstack_cluster_interface`, `sparkstack_cluster_master_port`, `sparkstack_cluster_env`); every
node gets the same image, the same snapshot and its own rank's launch script and unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # groups -> profiles -> cluster: the settings are only read here
    from sparkstack.groups import GroupSettings

# Where the head's switch keeps the key it reaches the workers with, and the workers' host keys.
CLUSTER_DIR = "/etc/sparkstack/cluster"
CLUSTER_KEY = f"{CLUSTER_DIR}/id_ed25519"
CLUSTER_KNOWN_HOSTS = f"{CLUSTER_DIR}/known_hosts"


# Every port a Ray node listens on, pinned so that the fence can name them: `ray start` picks most of them at
# random otherwise (its options in ray/scripts/scripts.py, Ray 2.x). The GCS port is the group's
# sparkstack_cluster_ray_port and these follow it, one each, in this order.
RAY_FOLLOWING_PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--runtime-env-agent-port",
                            "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port", "--metrics-export-port")
# The Ray Client server: `ray start --head` opens it on 10001 whenever the image has Ray's client dependencies
# (ray[client]), and no option turns it off; naming its port is an error without them (ray/_private/parameter.py),
# so it stays at Ray's default and the fence refuses that port to every source.
RAY_CLIENT_PORT = 10001
# Ray's worker processes, one port each: 200 a node (vLLM runs one actor a GPU) instead of Ray's 10002-19999,
# so that the fence does not close ports other programs use (11434, say).
RAY_WORKER_PORTS = (10002, 10201)


def ray_port_span(ray_port: int) -> tuple[int, int]:
    """The GCS port and the ports that follow it, as (first, last)."""
    return ray_port, ray_port + len(RAY_FOLLOWING_PORT_FLAGS)


class ClusterError(Exception):
    pass


@dataclass(frozen=True)
class ClusterNode:
    name: str                 # the inventory host name
    rank: int
    address: str              # this node's address on the interconnect
    head: str
    head_address: str
    nodes: int
    interface: str
    master_port: int
    bind: str                 # where the head's API listens: loopback (the door is the way in)
    ray_port: int = 6379      # the Ray head's GCS port (backend: ray)
    extra_env: dict[str, str] = field(default_factory=dict)
    peers: tuple[str, ...] = ()  # every node's interconnect address, this one's too

    @property
    def is_head(self) -> bool:
        return self.rank == 0

    def ray_port_options(self) -> list[str]:
        """`ray start` options that pin every port a Ray node opens (the GCS port is the head's --port)."""
        following = [f"{flag}={self.ray_port + n}" for n, flag in enumerate(RAY_FOLLOWING_PORT_FLAGS, 1)]
        return [*following, f"--min-worker-port={RAY_WORKER_PORTS[0]}", f"--max-worker-port={RAY_WORKER_PORTS[1]}"]

    def fenced_ports(self) -> list[tuple[int, int]]:
        """The port ranges that only the group's nodes may reach, on the interconnect: Ray's and the master port
        (merged, since nftables refuses overlapping intervals in one set)."""
        ranges = sorted([ray_port_span(self.ray_port), RAY_WORKER_PORTS, (self.master_port, self.master_port)])
        merged = [ranges[0]]
        for low, high in ranges[1:]:
            if low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        return merged


def cluster_nodes(settings: GroupSettings) -> list[ClusterNode]:
    """Every node of the group in rank order; empty when the group names none."""
    if not settings.cluster_addresses:
        return []
    head, head_address = next(iter(settings.cluster_addresses.items()))
    return [ClusterNode(name, rank, address, head, head_address, len(settings.cluster_addresses),
                        settings.cluster_interface or "", settings.cluster_master_port,
                        "127.0.0.1", settings.cluster_ray_port,
                        dict(settings.cluster_env), tuple(settings.cluster_addresses.values()))
            for rank, (name, address) in enumerate(settings.cluster_addresses.items())]


def cluster_node(settings: GroupSettings, host_name: str, group: str) -> ClusterNode:
    for node in cluster_nodes(settings):
        if node.name == host_name:
            return node
    raise ClusterError(f"host {host_name!r} is in cluster group {group!r} but not in its sparkstack_cluster_addresses "
                       f"({', '.join(settings.cluster_addresses) or 'empty'}); add it there (head first) or take it "
                       "out of the group")


def inventory_problems(group: str, settings: GroupSettings, hosts: list[str] | None) -> list[str]:
    """A cluster group whose inventory hosts and named nodes differ, each difference with what to set. Checked at
    plan and render time; nothing to compare while the inventory lists no host of the group (offline)."""
    if not settings.cluster_addresses or not hosts:
        return []
    where = f"group_data/{group}.py"
    problems = [f"inventory group {group!r} has host {name!r}, which {where} does not name in "
                f"sparkstack_cluster_addresses; add it there (head first, with its interconnect address) or take it "
                f"out of the inventory" for name in hosts if name not in settings.cluster_addresses]
    problems += [f"{where} names node {name!r} in sparkstack_cluster_addresses, but inventory group {group!r} has no such "
                 f"host (it has: {', '.join(hosts)}); add it to the inventory (for group 'cluster': "
                 f"SPARKSTACK_CLUSTER_HOSTS) or remove it there and set sparkstack_cluster_nodes to the nodes you have"
                 for name in settings.cluster_addresses if name not in hosts]
    return problems


def registry_entry(node: ClusterNode, settings: GroupSettings, ranks: int, backend: str) -> dict:
    """What llm-switch and sparkstack-cluster on this node know about a cluster model of `ranks` nodes."""
    return {
        "backend": backend,
        # Ray: the head's `ray start` listens here before the workers join it.
        "ray_port": node.ray_port if backend == "ray" else None,
        "rank": node.rank,
        "head": node.head,
        "head_address": node.head_address,
        "nodes": [{"name": n.name, "rank": n.rank, "address": n.address} for n in cluster_nodes(settings)[:ranks]],
        "key": CLUSTER_KEY,
        "known_hosts": CLUSTER_KNOWN_HOSTS,
    }
