"""Dynos: the release's artifact running as a plain process (slug) or a container (image).

A dyno must not outlive its supervisor: a process gets a parent-death signal; a container gets a
reaper process that removes it when the supervisor's pipe closes (also on SIGKILL).

Where Kiln runs it, a dyno listens on a unix socket in its app's sandbox (``$KILN_SOCKET``), not
on a TCP port any local process could reach: only its supervisor reaches it, so no neighbour
can skip the app's API keys. A slug dyno runs as its app's uid (``kiln.sandbox``); a container
runs in its app's network, with the app's memory limit and a pids limit, seeing only its own
model, read-only.
"""

from __future__ import annotations

__all__ = [
    "ContainerDyno", "ContainerLimits", "Dyno", "LineSink", "ProcessDyno", "free_port",
    "gpu_environment",
]  # fmt: skip

import collections
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kiln.engine import ensure_network
from kiln.models import ArtifactKind
from kiln.run.spares import Claimed, claim
from kiln.sandbox import Sandbox

LineSink = Callable[[str], None]
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gpu_environment(
    host_ids: Sequence[str], kind: ArtifactKind, share: float | None = None
) -> dict[str, str]:
    """The GPUs a dyno was given (Ray's ids: the host's indices), numbered as the dyno sees
    them. A process sees the host's devices, so the host's indices; a container is handed only
    its own devices, which CUDA numbers from 0 inside, so 0..n-1 (the host's index k > 0 there
    would name a device it does not have). ``KILN_GPUS`` says how many were reserved, so a
    runtime that sees fewer fails instead of falling back to the CPU; ``KILN_GPU_SHARE``, the
    fraction of one GPU Ray placed it on (``any:0.5``), so an engine leaves its neighbours theirs."""
    visible = (
        list(host_ids) if kind is ArtifactKind.SLUG else [str(i) for i in range(len(host_ids))]
    )
    env = {"CUDA_VISIBLE_DEVICES": ",".join(visible), "KILN_GPUS": str(len(host_ids))}
    if share is not None and 0 < share < 1:
        env["KILN_GPU_SHARE"] = f"{share:g}"
    return env


class Dyno(Protocol):
    url: str
    socket: Path | None  # where it listens, when on a unix socket (url is then http://dyno)

    def start(self) -> None: ...
    def alive(self) -> bool: ...
    def exit_code(self) -> int | None: ...
    def stop(self, timeout_s: float) -> None: ...
    def recent_lines(self) -> list[str]: ...


class _Output:
    """The dyno's output: each line to the sink, the last ones kept for error reports."""

    def __init__(self, sink: LineSink, keep: int = 40) -> None:
        self.sink = sink
        self.recent: collections.deque[str] = collections.deque(maxlen=keep)

    def follow(self, lines: Iterable[bytes | str]) -> None:
        threading.Thread(target=self._pump, args=(lines,), daemon=True, name="dyno-output").start()

    def _pump(self, lines: Iterable[bytes | str]) -> None:
        try:
            for raw in lines:
                text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
                for line in text.splitlines():
                    self.recent.append(line)
                    self.sink(line)
        except Exception as exc:  # the stream ends with the dyno; a broken one is not fatal
            self.sink(f"(log stream ended: {type(exc).__name__})")


def _die_with_parent() -> None:
    """In the child: SIGTERM when the supervisor's thread dies; own process group."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ProcessDyno:
    """A slug dyno: ``command`` in ``cwd``, on the unix socket ``socket`` (or ``$PORT`` on
    loopback without one), as the sandbox's uid when there is one. With ``spare`` (a warm
    spare's socket, ``kiln.run.spares``), a start claims the spare listening there, if any,
    instead of starting a process."""

    def __init__(
        self, command: list[str], cwd: Path, env: dict[str, str], sink: LineSink, *,
        sandbox: Sandbox | None = None, socket: Path | None = None, spare: Path | None = None,
    ) -> None:  # fmt: skip
        self.command = command
        self.cwd = cwd
        self.env = env
        self.sandbox = sandbox
        self.socket = socket
        self.spare = spare
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._output = _Output(sink)
        self._process: subprocess.Popen[bytes] | None = None
        self.claimed: Claimed | None = None  # this start's dyno was a spare
        self._asked = False  # claim_spare() ran for the next start(), which keeps what it got

    def claim_spare(self) -> bool:
        """Claim the spare at ``spare`` as this start's dyno; True if there was one. It blocks
        (a connection, up to a few seconds), so a supervisor calls it off its event loop; the
        next ``start`` then keeps the claimed dyno rather than starting a process."""
        self._let_go()
        self._asked = True
        if self.spare is None:
            return False
        uid = self.sandbox.uid if self.sandbox is not None else None
        claimed = claim(self.spare, self._launch_env(), self.cwd, uid)
        if claimed is None:
            return False
        self.claimed = claimed
        self._output.follow(claimed.output)
        return True

    def start(self) -> None:
        if not self._asked:  # a caller that did not claim first
            self.claim_spare()
        self._asked = False
        if self.claimed is not None:
            return
        options = self.sandbox.process_options() if self.sandbox is not None else {}
        self._process = subprocess.Popen(
            self.command, cwd=self.cwd, env=self._launch_env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
            start_new_session=True, **options,
        )  # fmt: skip
        assert self._process.stdout is not None
        self._output.follow(self._process.stdout)

    def _launch_env(self) -> dict[str, str]:
        """The environment of this start's dyno: where it listens (a dead dyno's socket gone)."""
        if self.socket is not None:
            with contextlib.suppress(FileNotFoundError):
                self.socket.unlink()  # a dead dyno's; unlink never follows a link
            self.url = "http://dyno"
            return {**self.env, "KILN_SOCKET": str(self.socket)}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        return {**self.env, "PORT": str(self.port), "HOST": "127.0.0.1"}

    def _let_go(self) -> None:
        """Forget the last start's dyno; a claimed one is stopped and its descriptors closed
        (a restart in place)."""
        if self.claimed is not None:
            self.claimed.stop(0)
        self._process, self.claimed = None, None

    def alive(self) -> bool:
        if self.claimed is not None:
            return self.claimed.alive()
        return self._process is not None and self._process.poll() is None

    def exit_code(self) -> int | None:
        if self.claimed is not None:
            return self.claimed.exit_code()
        return None if self._process is None else self._process.poll()

    def stop(self, timeout_s: float) -> None:
        if self.claimed is not None:
            self.claimed.stop(timeout_s)
            return
        process = self._process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass

    def recent_lines(self) -> list[str]:
        return list(self._output.recent)


@dataclass(frozen=True)
class ContainerLimits:
    """What a container dyno may use and see."""

    network: str | None = None  # the app's own network (made when missing)
    memory_bytes: int | None = None  # resources.memory
    pids: int | None = 4096
    models: tuple[tuple[str, str], ...] = ()  # (host path, path inside), mounted read-only
    socket_dir: Path | None = None  # a host directory of its own, mounted at /run/kiln


CONTAINER_SOCKET_DIR = "/run/kiln"


class ContainerDyno:
    """An image dyno through the Docker Engine API: on a unix socket in a host directory of its
    own (``limits.socket_dir``), else with its port published on loopback only."""

    def __init__(
        self,
        client: Any,  # docker.DockerClient; None: made from engine_url when first needed
        engine_url: str,
        image: str,
        env: dict[str, str],
        sink: LineSink,
        *,
        name: str,
        labels: dict[str, str],
        gpu_ids: list[str],  # the host's GPU indices (or UUIDs) the engine hands over
        limits: ContainerLimits | None = None,
    ) -> None:
        self._client = client
        self.engine_url = engine_url
        self.image = image
        self.env = env
        self.name = name
        self.labels = labels
        self.gpu_ids = gpu_ids
        self.limits = limits or ContainerLimits()
        socket_dir = self.limits.socket_dir
        self.socket = socket_dir / "dyno.sock" if socket_dir is not None else None
        self.url = ""
        self._output = _Output(sink)
        self._container: Any = None
        self._reaper: subprocess.Popen[bytes] | None = None

    @property
    def client(self) -> Any:
        """The engine's client, made on first use: making one asks the engine its API version,
        which a dyno that is described and never started (one the supervisor compares with a
        dyno started early) need not."""
        if self._client is None:
            import docker

            self._client = docker.DockerClient(base_url=self.engine_url)
        return self._client

    def start(self) -> None:
        import docker.types

        devices = (
            [docker.types.DeviceRequest(device_ids=self.gpu_ids, capabilities=[["gpu"]])]
            if self.gpu_ids
            else None
        )
        self._remove_quietly()
        limits = self.limits
        env = {**self.env, "PORT": "8080"}
        volumes: dict[str, dict[str, str]] = {}
        for host, inside in limits.models:  # only the app's own model, read-only
            volumes[host] = {"bind": inside, "mode": "ro"}
        if limits.models:
            env["HF_HUB_CACHE"] = "/models"
        options: dict[str, Any] = {"ports": {"8080/tcp": ("127.0.0.1", None)}}
        if limits.socket_dir is not None and self.socket is not None:
            limits.socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            owner = self._image_user()  # the image's user makes the socket (Kiln's: 10001)
            if owner is not None:
                os.chown(limits.socket_dir, owner, owner)
            with contextlib.suppress(FileNotFoundError):
                self.socket.unlink()
            volumes[str(limits.socket_dir)] = {"bind": CONTAINER_SOCKET_DIR, "mode": "rw"}
            env["KILN_SOCKET"] = f"{CONTAINER_SOCKET_DIR}/{self.socket.name}"
            options = {}  # nothing published: only the supervisor reaches the dyno
        if limits.network is not None:
            options["network"] = ensure_network(self.client, limits.network)
        if limits.memory_bytes is not None:
            options["mem_limit"] = limits.memory_bytes
            options["memswap_limit"] = limits.memory_bytes  # no swap beyond the limit
        if limits.pids is not None:
            options["pids_limit"] = limits.pids
        import docker.errors

        def run(init: bool) -> Any:
            return self.client.containers.run(
                self.image, detach=True, name=self.name, environment=env, labels=self.labels,
                init=init, device_requests=devices, volumes=volumes or None,
                security_opt=["no-new-privileges"], **options,
            )  # fmt: skip

        try:
            self._container = run(init=True)  # an init as PID 1 reaps the app's zombies
        except docker.errors.APIError as exc:
            # A podman without its init binary (catatonit) refuses init; the app's server
            # handles SIGTERM itself, so it runs as PID 1 instead.
            if "container-init" not in str(exc):
                raise
            self._remove_quietly()
            self._container = run(init=False)
        self._reaper = _start_reaper(self.engine_url, self._container.id)
        self._output.follow(self._container.logs(stream=True, follow=True))
        if self.socket is not None:
            self.url = "http://dyno"  # the supervisor waits for the socket itself
            return
        # The published port shows once the container runs; one that exited at once has none
        # (the supervisor then reports its exit code and last lines).
        for _ in range(100):
            self._container.reload()
            bindings = (self._container.attrs["NetworkSettings"].get("Ports") or {}).get("8080/tcp")
            if bindings:
                self.url = f"http://127.0.0.1:{bindings[0]['HostPort']}"
                return
            if self._container.attrs["State"]["Status"] not in ("created", "running"):
                return
            time.sleep(0.05)

    def _image_user(self) -> int | None:
        """The numeric uid the image runs as (its USER), or None for root or a named user."""
        user = str(self.client.images.get(self.image).attrs.get("Config", {}).get("User") or "")
        uid = user.split(":", 1)[0]
        return int(uid) if uid.isdigit() and int(uid) != 0 else None

    def alive(self) -> bool:
        if self._container is None:
            return False
        try:
            self._container.reload()
        except Exception:
            return False
        return bool(self._container.attrs["State"]["Running"])

    def exit_code(self) -> int | None:
        if self._container is None:
            return None
        try:
            self._container.reload()
        except Exception:
            return None
        state = self._container.attrs["State"]
        return None if state["Running"] else int(state["ExitCode"])

    def stop(self, timeout_s: float) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):  # already gone
                self._container.stop(timeout=int(timeout_s))
            self._remove_quietly()
        if self._reaper is not None and self._reaper.stdin is not None:
            self._reaper.stdin.close()  # nothing left to reap: let it exit

    def recent_lines(self) -> list[str]:
        return list(self._output.recent)

    def _remove_quietly(self) -> None:
        with contextlib.suppress(Exception):  # not there: nothing to remove
            self.client.containers.get(self.name).remove(force=True)


def _start_reaper(engine_url: str, container_id: str) -> subprocess.Popen[bytes]:
    """A process that removes the container once our end of its stdin pipe closes (we died)."""
    return subprocess.Popen(
        [sys.executable, "-m", "kiln.run.reaper", engine_url, container_id],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
