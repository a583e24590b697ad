"""The dyno supervisor: the Ray Serve deployment whose replicas keep an app's dynos. Each replica
starts the release's artifact on its node (``kiln.run.keeper`` decides when: start, restart in
place, give up, swap for a canary), forwards requests to it (``kiln.route.proxy``), checks API
keys, ships its logs, and stops the dyno when the replica stops.

Serve deploys it from its config as ``kiln.run.supervisor:build`` with ``{"spec": DynoSpec}``.
"""

from __future__ import annotations

__all__ = ["DynoFailed", "DynoSupervisor", "build"]

import asyncio
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from kiln.engine import EngineError, connect_engine
from kiln.models import ArtifactKind
from kiln.route.figures import Answer, ReplicaStart, router_line, start_line, stop_line
from kiln.route.keys import KeyGuard
from kiln.route.proxy import Forwarder
from kiln.route.upstream import UpstreamError
from kiln.run.cluster import node_name
from kiln.run.depot import TransferFailed, complete, fetch, has_revision, runtimes_of
from kiln.run.dyno import ContainerDyno, Dyno, ProcessDyno, gpu_environment
from kiln.run.early import Early, adopt, dyno_for, engine_url, launch, replica_name
from kiln.run.engine_metrics import NotAnEngine, scrape
from kiln.run.keeper import DynoFailed, DynoKeeper
from kiln.run.logs import LogShipper
from kiln.run.serve_config import canary_period
from kiln.run.sockets import PinnedSocket
from kiln.run.spares import runs_vllm, spare_key, spare_socket, start_spare
from kiln.run.spec import DynoSpec
from kiln.run.warm import WARM_MIN_S, directory, leave, taken
from kiln_runtime import process_age_s

logger = logging.getLogger(__name__)
WARM_AFTER_S = 1.0  # the first request's answer goes first


def build(args: dict[str, Any]) -> Application:
    """Serve's application builder: ``args`` is ``{"spec": DynoSpec as JSON}``."""
    spec = DynoSpec.model_validate(args["spec"])
    app: Application = DynoSupervisor.bind(spec.model_dump(mode="json"))  # type: ignore[attr-defined]
    return app


@serve.deployment(name="dyno")
@serve.ingress()
class DynoSupervisor:
    async def __init__(self, spec: dict[str, Any]) -> None:  # type: ignore[misc]  # Serve awaits it
        begun, warm = time.time(), taken(directory(), os.getpid())
        if warm is not None and warm < WARM_MIN_S:
            warm = None  # made warm as this replica waited for it: Ray started it for this one
        worker_s = 0.0 if warm is not None else _worker_wait()  # a warm worker cost it nothing
        base = DynoSpec.model_validate(spec)
        context = serve.get_replica_context()
        self.replica = replica_name(context.replica_id.unique_id)
        self.logs = LogShipper(base.app, self.replica, base.log_dir, node=node_name())
        self.logs.release = base.release
        await self.logs.start()
        self.guard = KeyGuard()
        self.guard.public = False  # closed until Serve hands over the rules (reconfigure)
        self.sandbox = base.sandbox.ensure() if base.sandbox is not None else None
        self._rank = 0
        self._on_head: bool | None = None  # found on the first prepare
        # Reached only through the socket it made, pinned so a link in its place leads nowhere.
        self.pinned: PinnedSocket | None = None
        # The warm spare this release's dynos share on this node (set by make()), if any.
        self._spare: tuple[list[str], Path, dict[str, str], Path] | None = None
        self._early: Early | None = None  # a dyno started before this constructor, adopted
        self._warm_timer: threading.Timer | None = None  # tops the node's warm workers up
        self._began = begun
        self.keeper = DynoKeeper(base, self)
        self.forwarder = Forwarder(
            lambda: self.keeper.dyno.url, self.keeper.wait_ready, self._routed,
            self.keeper.recover, self.guard,
            unix_socket=lambda: self.pinned.connect_path if self.pinned is not None else None,
            timeout_s=base.request_timeout_s,
        )  # fmt: skip
        self._prepare_s: float | None = None  # the first prepare's: part of this replica's start
        await self.keeper.start()
        # After the start, not in it: what it says and leaves is for the next replica.
        self._spare_task = asyncio.get_running_loop().create_task(self._leave_spare())
        if warm is not None:
            self.log("release", f"the replica's worker was warm (ready {warm:.1f}s before, "
                     "with Serve and the supervisor imported)", base.release)  # fmt: skip
        self._warm_timer = leave(WARM_AFTER_S)  # for the next replica on this node
        self.log("release", start_line(ReplicaStart(
            worker_s=worker_s,
            prepare_s=self._prepare_s or 0.0,
            dyno_s=max(0.0, time.time() - begun - (self._prepare_s or 0.0)),
        )), base.release)  # fmt: skip
        self._watchdog = asyncio.get_running_loop().create_task(self.keeper.watch())
        self._usage = asyncio.get_running_loop().create_task(self._report_usage())
        every = float(os.environ.get("KILN_ENGINE_METRICS_S", "10"))
        self._engine = asyncio.get_running_loop().create_task(self._report_engine(every))

    async def _leave_spare(self) -> None:
        """Say whether this dyno was a warm spare, and leave one for the next replica here."""
        spec = self.keeper.spec
        if spec.warm_spare and spec.artifact.kind is ArtifactKind.IMAGE:
            self.log("release", "[scaling] warm_spare is for slug apps for now; this image's "
                     "dynos start as usual", spec.release)  # fmt: skip
        dyno = self.keeper.dyno
        if isinstance(dyno, ProcessDyno) and dyno.claimed is not None:
            self.log("release", f"the dyno is a warm spare (pid {dyno.claimed.pid}): its "
                     "libraries were imported before this replica started", spec.release)  # fmt: skip
        if self._spare is not None:
            command, cwd, env, path = self._spare
            try:
                if await asyncio.to_thread(runs_vllm, command, cwd, env, self.sandbox):
                    self.log("release", "no warm spare: this app's dyno runs vLLM ([llm] engine "
                             '= "auto" with vLLM installed), whose engine is a process a spare '
                             "cannot start ahead", spec.release)  # fmt: skip
                    return
                left = await asyncio.to_thread(start_spare, command, cwd, env, self.sandbox, path)
            except (OSError, subprocess.SubprocessError) as exc:  # the replica serves anyway
                self.log("release", f"could not leave a warm spare: {exc}", spec.release)
                return
            if left:
                self.log("release", "left a warm spare on this node for the next replica",
                         spec.release)  # fmt: skip

    def __serve_build_asgi_app__(self) -> Forwarder:
        return self.forwarder

    # -- the keeper's host: what a dyno is here, and how it is reached -----------------------

    def make(self, spec: DynoSpec) -> Dyno:
        host_gpus = [str(g) for g in ray.get_gpu_ids()]  # Ray's: the node's own indices
        share = ray.get_runtime_context().get_assigned_resources().get("GPU")  # type: ignore[no-untyped-call]
        probe = f'"GET {spec.health_path} '

        def sink(line: str) -> None:
            if probe not in line:  # the supervisor's own health checks are noise in the app's log
                self.logs.line("dyno", line)

        box = self.sandbox
        self._spare, spare = None, None
        if spec.warm_spare and box is not None and spec.artifact.kind is ArtifactKind.SLUG:
            # What every dyno of this release on this node shares: not its name or GPUs.
            gpus = gpu_environment(host_gpus, spec.artifact.kind, share)
            command, cwd, full, _ = launch(spec, self.replica, box, gpus)
            shared = {k: v for k, v in full.items() if k != "KILN_DYNO" and k not in gpus}
            spare = spare_socket(box, spare_key(command, cwd, shared))
            self._spare = (command, cwd, shared, spare)
        mine = dyno_for(spec, self.replica, box, host_gpus, share, sink, spare=spare)
        early = adopt(self.replica, mine, sink)  # started while Ray's worker imported Serve
        self._early = early
        dyno: Dyno = early.dyno if early is not None else mine
        self.pinned = PinnedSocket(dyno.socket) if dyno.socket is not None else None
        return dyno

    async def prepare(self, spec: DynoSpec) -> None:
        """Bring what the release needs to this node (made on the head; here already when this
        is the head or an earlier replica brought it): the slug, its virtualenv and runtime,
        and the model's files; then link the model into a slug dyno's view."""
        roots = [
            Path(r) for r in (spec.model_cache, spec.sandbox and spec.sandbox.root.parent) if r
        ]

        def say(line: str) -> None:
            self.log("release", line, spec.release)

        begun = time.monotonic()
        try:
            if self._on_head is None:
                self._on_head = await asyncio.to_thread(_on_head)
            if self._on_head:
                pass  # where the build and the release phase put them
            elif spec.artifact.kind is ArtifactKind.SLUG:
                # The slug names its virtualenv, which names its runtime: each read once here.
                slug = Path(spec.artifact.reference)
                await self._bring(slug, roots, complete, say)
                venv = Path(json.loads((slug / "slug.json").read_text())["venv"])
                await self._bring(venv, roots, complete, say)
                for runtime in runtimes_of(venv):
                    await self._bring(runtime, roots, complete, say)
            if spec.artifact.kind is ArtifactKind.IMAGE and spec.image_source:
                await asyncio.to_thread(self._pull, spec, say)
            if spec.model_cache and not self._on_head:
                for model in spec.models:
                    folder = Path(spec.model_cache) / model.folder
                    await self._bring(folder, roots, has_revision(model.revision), say)
        except (TransferFailed, EngineError, OSError, ray.exceptions.RayError) as exc:
            raise DynoFailed(
                f"could not bring v{spec.release}'s artifact or model to node {node_name()}: "
                f"{_reason(exc)}"
            ) from None
        if spec.model_cache and self.sandbox is not None and (
            spec.artifact.kind is ArtifactKind.SLUG
        ):  # fmt: skip
            for model in spec.models:
                await asyncio.to_thread(
                    self.sandbox.link_model, Path(spec.model_cache), model.folder
                )
        if self._prepare_s is None:
            self._prepare_s = time.monotonic() - begun

    def _pull(self, spec: DynoSpec, say: Callable[[str], None]) -> None:
        """The image from the cluster's registry, unless this node's engine has it already."""
        engine = connect_engine(engine_url(spec))
        reference, remote = spec.artifact.reference, spec.image_source
        if engine is None:
            raise EngineError(f"no container engine answers at {engine_url(spec)} on this node")
        if remote is None or engine.has_image(reference):
            return
        user = os.environ.get("KILN_REGISTRY_USERNAME")
        auth = (
            {"username": user, "password": os.environ.get("KILN_REGISTRY_PASSWORD", "")}
            if user
            else None
        )
        say(f"pulling {remote} into {engine.name} on this node")
        started = time.monotonic()
        engine.fetch(remote, reference, auth, say)
        say(f"pulled {remote} in {time.monotonic() - started:.1f}s")

    async def _bring(
        self, path: Path, roots: list[Path], present: Callable[[Path], bool],
        say: Callable[[str], None],
    ) -> None:  # fmt: skip
        fetched = await fetch(path, roots, present=present, say=say)
        if fetched is not None:
            say(f"fetched {path.name[:32]} ({fetched.bytes / 2**20:.1f} MiB) in "
                f"{fetched.seconds:.1f}s, checked against the head's SHA-256")  # fmt: skip

    async def start(self, dyno: Dyno) -> None:
        early, self._early = self._early, None
        if early is not None and early.dyno is dyno:  # its first start: begun already
            failed = await asyncio.to_thread(early.wait)
            release = self.keeper.spec.release
            if failed is None:
                self.log("release", f"the dyno started early, {self._began - early.started:.2f}s "
                         "before this replica's constructor, while Ray's worker imported Serve",
                         release)  # fmt: skip
                return
            self.log("release", f"the dyno did not start early ({failed}): starting it now",
                     release)  # fmt: skip
        if self.pinned is not None:
            self.pinned.clear()  # a dead dyno's socket; the new one makes its own
        if isinstance(dyno, ContainerDyno):
            await asyncio.to_thread(dyno.start)
            return
        if isinstance(dyno, ProcessDyno) and dyno.spare is not None:
            await asyncio.to_thread(dyno.claim_spare)  # a connection: off the event loop
        dyno.start()  # on this thread: the parent-death signal is tied to it

    async def alive(self, dyno: Dyno) -> bool:
        return await asyncio.to_thread(dyno.alive)

    async def stop(self, dyno: Dyno, timeout_s: float) -> None:
        await asyncio.to_thread(dyno.stop, timeout_s)

    def _reachable(self) -> bool:
        """False while a socket dyno has not made its socket yet."""
        pinned = self.pinned
        return pinned is None or pinned.connect_path is not None or pinned.pin() is not None

    async def healthy(self, dyno: Dyno, spec: DynoSpec) -> bool:
        if not self._reachable():
            return False
        try:
            async with asyncio.timeout(spec.health_timeout_s):
                status, _ = await self.forwarder.upstream().get(spec.health_path)
                return status == 200
        except (TimeoutError, UpstreamError):
            return False

    def log(self, source: str, line: str, release: int) -> None:
        self.logs.release = release
        self.logs.line(source, line)

    def _routed(self, method: str, path: str, answer: Answer) -> None:
        self.logs.line("router", router_line(method, path, answer))

    # -- Serve's hooks -----------------------------------------------------------------------

    async def reconfigure(self, config: dict[str, Any], rank: Any = None) -> None:
        """Serve's user_config, applied live with no restart: who may call the app, and a canary
        (a newer release on a share of the replicas: this one runs it if its rank falls in the
        share, and swaps its dyno in place)."""
        self.guard.update(config)
        if rank is not None:
            self._rank = int(getattr(rank, "rank", 0))
        canary = config.get("canary")
        wanted = self.keeper.base
        if canary and self._rank % canary_period(int(canary["share"])) == 0:
            wanted = DynoSpec.model_validate(canary["spec"])
        self.keeper.want(wanted)

    def _ship_usage(self) -> None:
        usage = self.guard.take_usage()
        if usage:
            self.logs.line("usage", json.dumps({str(k): list(v) for k, v in usage.items()}))

    async def _report_usage(self) -> None:
        """API keys' use, and requests in flight (while there are, and once when they end),
        every 2 s to the app's log: the platform's /metrics sums the replicas' last reports."""
        shipped = 0
        while True:
            await asyncio.sleep(2)
            self._ship_usage()
            in_flight = self.forwarder.in_flight
            if in_flight or shipped:
                self.logs.line("metrics", json.dumps({"router": {"in_flight": in_flight}}))
            shipped = in_flight

    async def _report_engine(self, every_s: float) -> None:
        """An llm dyno's engine figures (vLLM's /metrics), every ``every_s``, to the app's log,
        where kiln ps and the platform's /metrics read them. Nothing the dyno answers stops it."""
        failed = False
        quiet = -1  # the dyno (its generation) that said it has no engine figures
        while True:
            await asyncio.sleep(every_s)
            keeper = self.keeper
            env = keeper.spec.artifact.env
            if (env.get("KILN_RUNTIME") != "llm" or env.get("KILN_LLM_ENGINE") == "transformers"
                    or not keeper.ready.is_set() or keeper.generation == quiet):  # fmt: skip
                continue
            try:
                if not self._reachable():
                    continue
                summary = await scrape(self.forwarder.upstream())
                if summary is not None:
                    self.logs.line("metrics", json.dumps(summary))
            except NotAnEngine:  # the transformers engine ("auto" without vLLM): ask no more
                quiet = keeper.generation
            except Exception:
                if not failed:  # once: the next rounds try again
                    logger.exception("reading the engine figures of %s failed", self.replica)
                failed = True

    async def check_health(self) -> None:
        keeper = self.keeper
        if keeper.failed:
            raise DynoFailed(keeper.failed)
        if keeper.ready.is_set() and not await self.healthy(keeper.dyno, keeper.spec):
            raise DynoFailed(f"the dyno did not answer {keeper.spec.health_path} with 200")

    async def __del__(self) -> None:
        self._watchdog.cancel()
        self._usage.cancel()
        self._engine.cancel()
        self._spare_task.cancel()
        if self._warm_timer is not None:
            self._warm_timer.cancel()
        self._ship_usage()
        self.logs.line("release", stop_line(self.keeper.spec.release))
        await self.keeper.stop()
        await self.forwarder.close()
        if self.pinned is not None:
            self.pinned.close()
        self.logs.stop()


def _worker_wait() -> float:
    """How long Ray took to start this replica's worker process, as far as the process can
    tell: from its birth to the replica's constructor (its age from /proc, to the clock tick: a
    start time from the boot time psutil reads, whole seconds, was off by up to a second). A
    worker much older than that was started ahead of need (Ray prestarts some) and cost the
    replica nothing."""
    age = process_age_s()
    return age if age is not None and age < 60 else 0.0


def _on_head() -> bool:
    """Whether this replica runs on the head node (where artifacts and weights are made)."""
    me = ray.get_runtime_context().get_node_id()
    return any(
        n["NodeID"] == me and "node:__internal_head__" in n.get("Resources", {})
        for n in ray.nodes()  # type: ignore[no-untyped-call]
    )


def _reason(exc: BaseException) -> str:
    """A depot error's own words, not Ray's wrapping of them."""
    cause = getattr(exc, "cause", None)
    return str(cause) if isinstance(cause, TransferFailed) else str(exc).strip().splitlines()[-1]
