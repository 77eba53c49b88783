"""The container driver's nodes: `sparkstack testhost up --nodes 4` gives four hosts, each like a Spark to ssh.

Each node must have its own address on both networks, systemd `running`, a docker that runs containers, and the
MemTotal it was given (lxcfs), since the memory gate and guard read /proc/meminfo.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparkstack import testhost, testhost_container
from tests.hosts.conftest import run

BIN = Path(sys.executable).parent
NODES = 4


@pytest.fixture(scope="module")
def four_nodes(main_node):
    if testhost.driver_name() != "container":
        pytest.skip("four nodes are the container driver's (the vm driver runs two)")
    result = run([str(BIN / "sparkstack"), "testhost", "up", "--nodes", str(NODES)], timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    yield result.stdout
    if os.environ.get("SPARKSTACK_KEEP_VM") != "1":
        for instance in testhost.instances(NODES)[1:]:
            testhost.down(instance)


def on(instance: str, command: str) -> subprocess.CompletedProcess:
    return testhost.ssh(command, timeout=120, instance=instance)


@pytest.mark.parametrize("node", range(1, NODES + 1))
def test_each_node_answers_ssh_at_its_own_address_with_systemd_running(four_nodes, node):
    instance = testhost.instances(NODES)[node - 1]
    assert f"{testhost.alias(instance)} " in four_nodes
    assert on(instance, "systemctl is-system-running").stdout.strip() == "running"
    addresses = on(instance, "ip -o -4 addr show | awk '{print $2, $4}'").stdout.split("\n")
    assert f"eth0 {testhost_container.address(instance)}/24" in addresses, addresses
    assert f"eth1 {testhost_container.link_address(instance)}/24" in addresses, addresses
    assert on(instance, "hostname").stdout.strip() == testhost.alias(instance)


@pytest.mark.parametrize("node", range(1, NODES + 1))
def test_each_node_has_the_memtotal_it_was_given(four_nodes, node):
    instance = testhost.instances(NODES)[node - 1]
    first = on(instance, "head -1 /proc/meminfo").stdout.split()
    assert first[:2] == ["MemTotal:", str(2 * 1024 * 1024)], first


def test_docker_runs_a_container_inside_a_node_and_its_memory_counts_against_the_node(four_nodes):
    last = testhost.instances(NODES)[-1]
    # An image made from the node's own files: no registry needed.
    made = on(last, "tar -C / -cf - lib lib64 usr/bin/python3 usr/bin/python3.11 usr/lib/python3.11 usr/lib64 "
                    "usr/lib/x86_64-linux-gnu 2>/dev/null | docker import - sparkstack-probe >/dev/null && echo made")
    assert made.stdout.strip() == "made", made.stderr
    before = int(on(last, "awk '/MemAvailable/ {print $2}' /proc/meminfo").stdout)
    # A process in an inner container holds 400 MB; the node's own /proc/meminfo must see it go.
    held = on(last, "docker run -d --name probe sparkstack-probe /usr/bin/python3 -c "
                    "\"import time; b = bytearray(400 * 1024 * 1024); time.sleep(60)\" >/dev/null; sleep 3; "
                    "awk '/MemAvailable/ {print $2}' /proc/meminfo")
    state = on(last, "docker inspect -f '{{.State.Status}}' probe").stdout.strip()
    on(last, "docker rm -f probe >/dev/null")
    assert state == "running", state
    during = int(held.stdout.split()[-1])
    assert before - during > 300 * 1024, (before, during)


def test_the_link_joins_every_node_and_nothing_else(four_nodes):
    for node in range(2, NODES + 1):
        # sshd on the other node, over the link (bash's /dev/tcp: no extra package on the node)
        peer = testhost_container.link_address(testhost.instances(NODES)[node - 1])
        reached = on("", f"timeout 5 bash -c '</dev/tcp/{peer}/22' && echo up")
        assert reached.stdout.strip() == "up", reached.stderr
    # The link is internal: no route out of it, as the VM's private link had none.
    assert on("", "ip route get 1.1.1.1 | grep -c eth1 || true").stdout.strip() == "0"
