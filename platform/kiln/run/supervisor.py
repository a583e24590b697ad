"""The dyno supervisor: each Ray Serve replica of an app starts the release's artifact on its
node, waits for it to be ready, forwards requests to it, restarts it in place when it dies, and
stops it when the replica stops.

Serve deploys it from its config as ``kiln.run.supervisor:build`` with ``{"spec": DynoSpec}``.
"""

from __future__ import annotations

__all__ = ["DynoSupervisor", "build"]

import asyncio
import collections
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
from ray import serve
from ray.serve import Application

from kiln.engine import app_network
from kiln.models import ArtifactKind
from kiln.proc import host_environment
from kiln.route.keys import KeyGuard
from kiln.route.proxy import Forwarder
from kiln.run.dyno import ContainerDyno, ContainerLimits, Dyno, ProcessDyno
from kiln.run.logs import LogShipper
from kiln.run.serve_config import canary_period
from kiln.run.sockets import PinnedSocket
from kiln.run.spec import DynoSpec
from kiln.vault import Vault

CRASH_LOOP_RESTARTS = 3
CRASH_LOOP_WINDOW_S = 60.0


class DynoFailed(RuntimeError):
    """The dyno could not be made ready; the message carries its exit and last log lines."""


def build(args: dict[str, Any]) -> Application:
    """Serve's application builder: ``args`` is ``{"spec": DynoSpec as JSON}``."""
    spec = DynoSpec.model_validate(args["spec"])
    app: Application = DynoSupervisor.bind(spec.model_dump(mode="json"))  # type: ignore[attr-defined]
    return app


@serve.deployment(name="dyno")
@serve.ingress()
class DynoSupervisor:
    async def __init__(self, spec: dict[str, Any]) -> None:  # type: ignore[misc]  # Serve awaits it
        self.spec = DynoSpec.model_validate(spec)
        # What the app's args say: the release the replica runs unless its rank falls in a
        # canary's share (reconfigure), and the one it returns to when a canary ends or fails.
        self.base = self.spec
        self._wanted = self.spec
        self._failed_canaries: set[int] = set()
        self._swapping = False
        self._swap: asyncio.Task[None] | None = None
        self._rank = 0
        context = serve.get_replica_context()
        self.replica = f"dyno.{context.replica_id.unique_id[:6]}"
        self.logs = LogShipper(self.spec.app, self.replica, self.spec.log_dir)
        self.logs.release = self.spec.release
        await self.logs.start()
        self.failed: str | None = None
        self.exits: collections.deque[float] = collections.deque(maxlen=CRASH_LOOP_RESTARTS)
        self._ready = asyncio.Event()
        self.guard = KeyGuard()
        self.guard.public = False  # closed until Serve hands over the rules (reconfigure)
        self._generation = 0  # counts dynos that became ready: restarts in place make new ones
        self._health_timeout = aiohttp.ClientTimeout(total=self.spec.health_timeout_s)
        self.sandbox = self.spec.sandbox.ensure() if self.spec.sandbox is not None else None
        self.dyno = self._make_dyno()
        # Reached only through the socket it made, pinned so a link in its place leads nowhere.
        self.pinned = PinnedSocket(self.dyno.socket) if self.dyno.socket is not None else None
        self.forwarder = Forwarder(
            lambda: self.dyno.url, self._wait_ready, self._routed, self._recover, self.guard,
            unix_socket=lambda: self.pinned.connect_path if self.pinned is not None else None,
        )  # fmt: skip
        self.logs.line(
            "release",
            f"starting v{self.spec.release} ({self.spec.artifact.kind} {self.spec.artifact.digest[:19]})",
        )
        await self._start(self.spec.startup_timeout_s)
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        self._usage = asyncio.get_running_loop().create_task(self._report_usage())

    def __serve_build_asgi_app__(self) -> Forwarder:
        return self.forwarder

    # -- the dyno ----------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        key = os.environ.get("KILN_SECRET_KEY")
        if not key:
            raise DynoFailed(
                "KILN_SECRET_KEY is not set on this Ray node, so the app's config vars cannot be "
                "opened; start the node with the platform's key (kiln up does this)"
            )
        config = Vault([k.strip().encode() for k in key.split(",") if k.strip()]).open(
            self.spec.config_sealed
        )
        import ray

        gpus = [str(g) for g in ray.get_gpu_ids()]
        models = {}
        if self.spec.model_cache and self.spec.model_folder:
            # The weights are in the model cache already (the release phase put them there):
            # a cold start never downloads. A container mounts only the app's own model; a
            # slug dyno sees it linked into its sandbox, the rest of the cache closed to it.
            cache = self.spec.model_cache
            if self.sandbox is not None and self.spec.artifact.kind is ArtifactKind.SLUG:
                cache = str(self.sandbox.link_model(Path(cache), self.spec.model_folder))
            models = {"HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1"}
        return {
            "PYTHONUNBUFFERED": "1",
            **self.spec.env,
            **config,
            "KILN_APP": self.spec.app,
            "KILN_RELEASE": f"v{self.spec.release}",
            "KILN_DYNO": self.replica,
            "CUDA_VISIBLE_DEVICES": ",".join(gpus),
            **models,
        }

    def _make_dyno(self) -> Dyno:
        artifact = self.spec.artifact
        env = self._environment()

        probe = f'"GET {self.spec.health_path} '

        def sink(line: str) -> None:
            if probe not in line:  # the supervisor's own health checks are noise in the app's log
                self.logs.line("dyno", line)

        box = self.sandbox
        if artifact.kind is ArtifactKind.SLUG:
            # A process shares the host: give it the host's PATH and locale, not Ray's variables,
            # and its app's uid, HOME and socket. A container has its own (the image's).
            return ProcessDyno(
                artifact.command,
                Path(artifact.reference) / "app",
                {**host_environment(), **artifact.env, **env,
                 **(box.environment() if box is not None else {})},
                sink,
                sandbox=box,
                socket=box.sockets / f"{self.replica}.sock" if box is not None else None,
            )  # fmt: skip
        import docker

        url = (
            self.spec.docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        )
        gpus = [g for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g]
        folder = self.spec.model_folder
        limits = ContainerLimits(
            network=app_network(self.spec.app),
            memory_bytes=self.spec.memory_bytes,
            pids=self.spec.pids_limit,
            models=((f"{self.spec.model_cache}/{folder}", f"/models/{folder}"),)
            if self.spec.model_cache and folder else (),
            socket_dir=box.mounts / self.replica if box is not None else None,
        )  # fmt: skip
        return ContainerDyno(
            docker.DockerClient(base_url=url), url, artifact.reference, env, sink,
            name=f"kiln-{self.spec.app}-{self.replica.replace('.', '-')}",
            labels={"kiln.app": self.spec.app, "kiln.release": str(self.spec.release),
                    "kiln.replica": self.replica},
            gpu_ids=gpus,
            limits=limits,
        )  # fmt: skip

    async def _start(self, timeout_s: float) -> None:
        """Start the dyno and wait until its health path answers 200; raise DynoFailed if not."""
        self._ready.clear()
        if self.pinned is not None:
            self.pinned.clear()  # a dead dyno's socket; the new one makes its own
        if isinstance(self.dyno, ContainerDyno):
            await asyncio.to_thread(self.dyno.start)
        else:
            self.dyno.start()  # on this thread: the parent-death signal is tied to it
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not await asyncio.to_thread(self.dyno.alive):
                await asyncio.sleep(0.2)  # let the last lines arrive
                raise DynoFailed(
                    self._report(f"exited with code {self.dyno.exit_code()} before it was ready")
                )
            if self.pinned is not None and self.pinned.connect_path is None:
                self.pinned.pin()  # None until the dyno has made its socket
            if await self._healthy():
                self._generation += 1
                self._ready.set()
                self.logs.line("release", f"dyno ready at {self.dyno.url}")
                return
            await asyncio.sleep(0.05)
        await asyncio.to_thread(self.dyno.stop, self.spec.stop_timeout_s)
        raise DynoFailed(
            self._report(f"did not answer {self.spec.health_path} with 200 within {timeout_s:.0f}s")
        )

    def _report(self, what: str) -> str:
        lines = "\n".join(self.dyno.recent_lines()[-15:]) or "(no output)"
        message = (
            f"the dyno of {self.spec.app} v{self.spec.release} {what}; its last lines:\n{lines}"
        )
        self.logs.line("release", message)
        return message

    async def _healthy(self) -> bool:
        if self.pinned is not None and self.pinned.connect_path is None:
            return False
        try:
            async with self.forwarder.session().get(
                f"{self.dyno.url}{self.spec.health_path}", timeout=self._health_timeout
            ) as response:
                return response.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def _watch(self) -> None:
        """Restart the dyno in place when it exits; give up (unhealthy) on a crash loop, or,
        for a canary's dyno, give the canary up and go back to the release before it."""
        while True:
            if self._swapping or await asyncio.to_thread(self.dyno.alive):
                await asyncio.sleep(0.1)
                continue
            code = self.dyno.exit_code()
            self._ready.clear()
            now = time.monotonic()
            self.exits.append(now)
            self.logs.line("dyno", f"exited with code {code}; restarting in place")
            if len(self.exits) == CRASH_LOOP_RESTARTS and now - self.exits[0] < CRASH_LOOP_WINDOW_S:
                why = f"crashed {CRASH_LOOP_RESTARTS} times in {CRASH_LOOP_WINDOW_S:.0f}s (last exit code {code})"
                if self.spec.release != self.base.release:
                    self._give_up_canary(self._report(why))
                    continue
                self.failed = self._report(why)
                return
            try:
                await self._start(self.spec.startup_timeout_s)
            except DynoFailed as exc:
                self.failed = str(exc)
                return

    async def _wait_ready(self) -> bool:
        if self._ready.is_set():
            return True
        if self.failed:
            return False
        try:
            await asyncio.wait_for(
                self._ready.wait(), timeout=min(self.spec.startup_timeout_s, 120)
            )
        except TimeoutError:
            return False
        return True

    async def _recover(self) -> bool:
        """A request could not reach the dyno: True once it serves again. If it died, wait for
        the watchdog to have restarted it (a new generation), not just for a stale ready flag."""
        generation = self._generation
        loop = asyncio.get_running_loop()
        # A dyno just killed refuses connections a moment before it can be reaped, and looks
        # alive meanwhile: look again for a while before trusting the ready flag.
        settle = loop.time() + 1.0
        while self._generation == generation and await asyncio.to_thread(self.dyno.alive):
            if loop.time() > settle:
                return self._ready.is_set()
            await asyncio.sleep(0.05)
        deadline = loop.time() + min(self.spec.startup_timeout_s, 120)
        while self._generation == generation and not self.failed and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return self._generation != generation and self._ready.is_set()

    def _routed(self, method: str, path: str, status: int, seconds: float) -> None:
        self.logs.line("router", f"{method} {path} {status} {seconds * 1000:.1f}ms")

    # -- Serve's hooks -----------------------------------------------------------------------

    async def reconfigure(self, config: dict[str, Any], rank: Any = None) -> None:
        """Serve's user_config, applied live with no restart: who may call the app, and a canary
        (a newer release on a share of the replicas: this one runs it if its rank falls in the
        share, and swaps its dyno in place)."""
        self.guard.update(config)
        if rank is not None:
            self._rank = int(getattr(rank, "rank", 0))
        canary = config.get("canary")
        wanted = self.base
        if canary and self._rank % canary_period(int(canary["share"])) == 0:
            spec = DynoSpec.model_validate(canary["spec"])
            if spec.release not in self._failed_canaries:
                wanted = spec
        self._wanted = wanted
        if wanted.release != self.spec.release and (self._swap is None or self._swap.done()):
            self._swap = asyncio.get_running_loop().create_task(self._converge())

    async def _converge(self) -> None:
        """Swap the dyno for the wanted release's until they agree (a canary starting, ending,
        or failing and going back)."""
        while self._wanted.release != self.spec.release:
            wanted = self._wanted
            canary = wanted.release != self.base.release
            self.logs.line("release", f"switching to v{wanted.release}"
                           + (" (canary)" if canary else f" from the canary v{self.spec.release}"))  # fmt: skip
            self._swapping = True
            try:
                self._ready.clear()
                await asyncio.to_thread(self.dyno.stop, self.spec.stop_timeout_s)
                self.spec = wanted
                self.logs.release = wanted.release
                self.exits.clear()
                self.dyno = self._make_dyno()
                self.pinned = (
                    PinnedSocket(self.dyno.socket) if self.dyno.socket is not None else None
                )
                await self._start(wanted.startup_timeout_s)
            except DynoFailed as exc:
                if not canary:
                    self.failed = str(exc)
                    return
                self._give_up_canary(str(exc))
            finally:
                self._swapping = False

    def _give_up_canary(self, reason: str) -> None:
        """The canary's dyno would not start or keep running here: log it (the release stage
        aborts the canary) and go back to the release before it."""
        self._failed_canaries.add(self.spec.release)
        self.logs.line("release", f"canary v{self.spec.release} failed: {reason}")
        self._wanted = self.base
        self._swapping = True  # the watchdog must not restart the canary's dyno meanwhile
        if self._swap is None or self._swap.done():
            self._swap = asyncio.get_running_loop().create_task(self._converge())

    def _ship_usage(self) -> None:
        usage = self.guard.take_usage()
        if usage:
            self.logs.line("usage", json.dumps({str(k): list(v) for k, v in usage.items()}))

    async def _report_usage(self) -> None:
        while True:
            await asyncio.sleep(2)
            self._ship_usage()

    async def check_health(self) -> None:
        if self.failed:
            raise DynoFailed(self.failed)
        if self._ready.is_set() and not await self._healthy():
            raise DynoFailed(f"the dyno did not answer {self.spec.health_path} with 200")

    async def __del__(self) -> None:
        self._watchdog.cancel()
        self._usage.cancel()
        self._ship_usage()
        self.logs.line("release", f"stopping the dyno of v{self.spec.release}")
        await asyncio.to_thread(self.dyno.stop, self.spec.stop_timeout_s)
        await self.forwarder.close()
        if self.pinned is not None:
            self.pinned.close()
        self.logs.stop()
