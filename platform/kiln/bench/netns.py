"""Machines of a test cluster on one host: each worker node is a network namespace with an
address of its own on a bridge the test makes, and a mount namespace where the head's state
(its KILN_HOME, model cache and sandboxes) is hidden under empty tmpfs, so what a node needs
must travel to it. Nodes are stopped by the PIDs in their namespace, never by name."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path


def can_make_nodes() -> str | None:
    """Why this host cannot make test nodes, or None."""
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "needs iproute2 (ip) and util-linux (unshare)"
    probe = f"kp{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make a network namespace here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


# A node's own podman (as root in a namespace that cannot raise rlimits: default ulimits it may
# keep; runc), its image store and network definitions on the node's disk, not the host's.
_ENGINE = (
    "mkdir -p {dir}/root {dir}/run {dir}/networks && "
    'printf \'[containers]\\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\\n'
    '[engine]\\nruntime = "runc"\\n[network]\\nnetwork_config_dir = "{dir}/networks"\\n\' '
    "> {dir}/containers.conf && export CONTAINERS_CONF={dir}/containers.conf && "
    "(podman --root {dir}/root --runroot {dir}/run system service --time=0 "
    "unix://{dir}/podman.sock > {dir}/podman.log 2>&1 &) && "
    "for _ in $(seq 100); do [ -S {dir}/podman.sock ] && break; sleep 0.1; done && "
    "export DOCKER_HOST=unix://{dir}/podman.sock && "
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Bridge:
    """A bridge on the host with the head's address; nodes are plugged into it."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:5]
        self.name = f"kb{tag}"
        self.subnet = f"10.{int(tag[:2], 16) % 200 + 20}.{int(tag[2:4], 16)}"
        self.head = f"{self.subnet}.1"
        _ip("link", "add", self.name, "type", "bridge")
        _ip("addr", "add", f"{self.head}/24", "dev", self.name)
        _ip("link", "set", self.name, "up")

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.name], capture_output=True)


class Node:
    """A worker machine: its own network namespace, address and disk."""

    def __init__(self, bridge: Bridge, number: int, hidden: list[Path]) -> None:
        self.name = f"w{number}"
        self.netns = f"{bridge.name}-{self.name}"
        self.address = f"{bridge.subnet}.{number + 1}"
        self.hidden = hidden  # the head's directories: empty tmpfs here
        self.home = Path(f"/var/lib/kiln/node-{bridge.name}-{self.name}")  # under a hidden one
        outside, inside = f"{bridge.name}{self.name}h", f"{bridge.name}{self.name}n"
        _ip("netns", "add", self.netns)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", outside, "master", bridge.name)
        _ip("link", "set", outside, "up")
        _ip("link", "set", inside, "netns", self.netns)
        for args in (("addr", "add", f"{self.address}/24", "dev", inside),
                     ("link", "set", inside, "up"), ("link", "set", "lo", "up")):  # fmt: skip
            _ip("netns", "exec", self.netns, "ip", *args)
        self.outside = outside

    def run(
        self, *command: str, env: dict[str, str], timeout: float = 180, engine: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``command`` on this node: in its network namespace, with the head's state hidden;
        with ``engine``, beside a container engine of the node's own (podman's Docker API,
        its storage and networks on the node's disk), in DOCKER_HOST."""
        mounts = " && ".join(f"mount -t tmpfs tmpfs {p}" for p in self.hidden)
        script = f"mount --make-rprivate / && {mounts} && "
        if engine:
            script += _ENGINE.format(dir=self.home / "engine")
        script += 'exec "$@"'
        return subprocess.run(
            # nsenter, not ip netns exec: that mounts a sysfs of its own, without the cgroup
            # hierarchy a container engine needs
            ["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "--mount",
             "--propagation", "private", "sh", "-c", script, "node", *command],
            env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def join(
        self, head: str, token: str, env: dict[str, str], *extra: str, engine: bool = False
    ) -> None:
        joined = self.run(
            sys.executable, "-m", "kiln", "nodes:join", head, "--token", token,
            "--home", str(self.home), "--name", self.name, *extra, env=env, engine=engine,
        )  # fmt: skip
        assert joined.returncode == 0, joined.stdout + joined.stderr

    def pids(self) -> list[int]:
        found = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True)
        return [int(p) for p in found.stdout.split()]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Every process of this machine at once, as when it loses power."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def remove(self) -> None:
        self.kill(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.kill()
        subprocess.run(["ip", "link", "del", self.outside], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
