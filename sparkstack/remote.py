"""Reaching a host's loopback-bound model endpoint from here: ssh commands and an ssh tunnel."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


class RemoteError(Exception):
    pass


def ssh_base(host: str, ssh_config: Path | None) -> list[str]:
    base = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    if ssh_config:
        base += ["-F", str(ssh_config)]
    return base + [host]


def ssh_output(host: str, ssh_config: Path | None, command: str, timeout: float = 60) -> str:
    try:
        result = subprocess.run(ssh_base(host, ssh_config) + [command], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RemoteError(f"ssh {host}: no answer within {timeout:g} s") from None
    if result.returncode != 0:
        raise RemoteError(f"ssh {host} {command!r} exited {result.returncode}: {result.stderr.strip()[:200]}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Tunnel:
    """`ssh -N -L` from a free local port to 127.0.0.1:PORT on the host, for as long as the block runs."""

    def __init__(self, host: str, ssh_config: Path | None, remote_port: int, wait_s: float = 20):
        self.host, self.ssh_config, self.remote_port, self.wait_s = host, ssh_config, remote_port, wait_s
        self.local_port = free_port()
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Tunnel":
        command = ssh_base(self.host, self.ssh_config)
        # A connection of its own (never a multiplexing master's), so the forward ends with this process.
        command[1:1] = ["-N", "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "ExitOnForwardFailure=yes",
                        "-L", f"127.0.0.1:{self.local_port}:127.0.0.1:{self.remote_port}"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RemoteError(f"ssh tunnel to {self.host} failed: {self.process.stderr.read().decode().strip()[:200]}")
            try:
                with socket.create_connection(("127.0.0.1", self.local_port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RemoteError(f"ssh tunnel to {self.host} did not open within {self.wait_s:g} s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
