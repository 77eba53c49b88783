"""The cluster deployer: what lets the head's group switch reach the other nodes of a cluster group.

  preflight   every node of the group is in this run, and each has its interconnect address on the
              group's interface
  head        a dedicated ssh key (made on the head, never leaves it) and the workers' host keys
  workers     the head's key in root's authorized_keys, restricted to the head's interconnect address
              and to one forced command, `sparkstack-cluster member`, which can only prepare, start,
              stop and report this node's rank of a cluster model (files/sparkstack-cluster)
  every node  the port fence (nftables, its own unit): Ray's ports and the master port answer only the
              group's nodes on the interconnect, the Ray Client port no one
  head        the group's Ray token in the secrets file, made there if absent (the value never leaves the
              host: the head's group switch hands it to each worker over the member key as the ranks start)

No broad root ssh between nodes: the key opens nothing but that command. The group's units, launch
scripts and registry are the models deployer's, rendered per node (sparkstack/render.py).
"""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host, state
from pyinfra.api import DeployError, deploy
from pyinfra.facts.server import Command
from pyinfra.operations import files, python, server, systemd
from pyinfra.operations.util import any_changed

from sparkstack.cluster import CLUSTER_DIR, CLUSTER_KEY, CLUSTER_KNOWN_HOSTS, ClusterNode
from sparkstack.deployers.helpers import distribution_package, put_component, secret_is_set, secrets_rule_command
from sparkstack.groups import GroupSettings
from sparkstack.render import CLUSTER_PATH, SECRETS_PATH, Rendering
from sparkstack_host.contract import CLUSTER_FENCE_UNIT, RAY_TOKEN_ENV

AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"


def key_comment(group: str) -> str:
    return f"sparkstack-cluster@{group}"


def authorized_line(public_key: str, node: ClusterNode, group: str) -> str:
    """The worker's entry for the head's key: only from the head's interconnect address, only the member command."""
    key_type, key_body = public_key.split()[:2]
    return (f'restrict,from="{node.head_address}",command="{CLUSTER_PATH} member" '
            f"{key_type} {key_body} {key_comment(group)}")


def _run_host(name: str):
    for candidate in state.inventory:
        if candidate.name == name:
            return candidate
    return None


@deploy("sparkstack cluster preflight")
def cluster_preflight(rendering: Rendering, settings: GroupSettings) -> None:
    """Facts and refusals only, before anything on any node changes."""
    node = rendering.node
    if node is None:
        return
    in_run = {h.name for h in state.activated_hosts}
    missing = [name for name in settings.cluster_addresses if name not in in_run]
    if missing:
        raise DeployError(f"{host.name}: cluster group {rendering.group!r} must be deployed as a whole (the head needs "
                          f"every worker's host key, the workers the head's key); not in this run: {', '.join(missing)}. "
                          f"Deploy with `--limit {rendering.group}`")
    addresses = host.get_fact(Command, command=f"ip -o -4 addr show dev {node.interface} 2>/dev/null || true") or ""
    if f" {node.address}/" not in addresses:
        raise DeployError(f"{host.name}: sparkstack_cluster_addresses gives this node {node.address}, but interface "
                          f"{node.interface!r} (sparkstack_cluster_interface) does not carry it; address the interconnect "
                          "as NVIDIA's stacking playbook shows, or correct group_data")


@deploy("sparkstack cluster access")
def cluster_access(rendering: Rendering, settings: GroupSettings) -> None:
    node = rendering.node
    if node is None:
        return
    group = rendering.group
    distribution_package("nftables", "the cluster's port fence")
    ops = put_component(rendering, "cluster")
    systemd.daemon_reload(name="Reload systemd (the cluster fence's unit changed)", _if=any_changed(ops["cluster-fence-unit"]))
    systemd.service(name=f"Run {CLUSTER_FENCE_UNIT}, enabled at boot", service=CLUSTER_FENCE_UNIT, running=True,
                    enabled=True)
    systemd.service(name=f"Reload {CLUSTER_FENCE_UNIT} (its rules or unit changed)", service=CLUSTER_FENCE_UNIT,
                    restarted=True, _if=any_changed(ops["cluster-fence-rules"], ops["cluster-fence-unit"]))
    files.directory(name=f"Directory {CLUSTER_DIR}", path=CLUSTER_DIR, user="root", group="root", mode="0700")
    head = _run_host(node.head)
    head_key = (head.get_fact(Command, command=f"cat {CLUSTER_KEY}.pub 2>/dev/null || true") or "").strip()
    if node.is_head:
        ray_token_on_head()
        if not head_key:
            server.shell(name=f"Make the group switch's ssh key {CLUSTER_KEY} (it never leaves this node)",
                         commands=[f"ssh-keygen -q -t ed25519 -N '' -C {key_comment(group)} -f {CLUSTER_KEY}"])
        known = []
        for name, address in list(settings.cluster_addresses.items())[1:]:
            host_key = (_run_host(name).get_fact(Command, command=f"cat {HOST_KEY}") or "").strip()
            known.append(f"{address} {' '.join(host_key.split()[:2])}")
        files.put(name=f"Workers' host keys {CLUSTER_KNOWN_HOSTS}", src=StringIO("\n".join(known) + "\n"),
                  dest=CLUSTER_KNOWN_HOSTS, user="root", group="root", mode="0644")
        return
    files.directory(name="Directory /root/.ssh", path="/root/.ssh", user="root", group="root", mode="0700")
    if head_key:
        server.user_authorized_keys(name=f"The head's switch key in {AUTHORIZED_KEYS} (forced command only)",
                                    user="root", public_keys=[authorized_line(head_key, node, group)])
    else:
        # The head makes its key in this same run: its public half is read when this operation runs, after that.
        python.call(name=f"The head's switch key in {AUTHORIZED_KEYS} (forced command only; key made in this run)",
                    function=_authorize_new_head_key, head=head, node=node, group=group)


def ray_token_on_head() -> None:
    """The group's Ray token, made on the head from its own random source if the secrets file has none (the secrets
    module's `make`: the value is in no command line, fact or log)."""
    if not secret_is_set(RAY_TOKEN_ENV):
        server.shell(name=f"Make the group's Ray token ({RAY_TOKEN_ENV} in {SECRETS_PATH}; it never leaves the group)",
                     commands=[secrets_rule_command("make", RAY_TOKEN_ENV, SECRETS_PATH)])


def _authorize_new_head_key(head, node: ClusterNode, group: str) -> None:
    ok, output = head.run_shell_command(command=f"cat {CLUSTER_KEY}.pub")
    if not ok:
        raise DeployError(f"{host.name}: could not read the head's key {CLUSTER_KEY}.pub on {head.name}")
    line = authorized_line(output.stdout.strip(), node, group)
    marker = shlex.quote(f" {key_comment(group)}$")
    # Replace an older entry of this group's key, keep every other line.
    command = (f"touch {AUTHORIZED_KEYS} && chmod 600 {AUTHORIZED_KEYS} && "
               f"grep -v {marker} {AUTHORIZED_KEYS} > {AUTHORIZED_KEYS}.sparkstack || true; "
               f"printf '%s\\n' {shlex.quote(line)} >> {AUTHORIZED_KEYS}.sparkstack && "
               f"chmod 600 {AUTHORIZED_KEYS}.sparkstack && mv {AUTHORIZED_KEYS}.sparkstack {AUTHORIZED_KEYS}")
    ok, output = host.run_shell_command(command=command)
    if not ok:
        raise DeployError(f"{host.name}: could not add the head's key to {AUTHORIZED_KEYS}: {output.stderr}")
