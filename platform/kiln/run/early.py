"""What a dyno is launched as (a slug's process, an image's container: ``dyno_for``), and its
early start: while Ray's new worker process for its replica is still importing Serve, not after.

A replica's worker process spends about half a second importing Serve's replica (with FastAPI,
Starlette, pydantic) and Kiln's supervisor before the supervisor's constructor runs; the dyno
started only then, and the app's own start (its interpreter and imports, 0.3 s for a small app;
a container's, 0.5 s) came after that. With a second core the two overlap. Every Ray worker of
Kiln's cluster preloads this module (``kiln.run.cluster.ray_environment``), which waits for the
worker's first import of ``ray.serve``: in a replica that is the actor creation task loading
Serve's replica class, when Ray knows the actor's name (``SERVE_REPLICA::<app>#dyno#<id>``),
hence the app and the replica's name. The release's ``DynoSpec`` is in the config Serve keeps
as the platform applied it (its controller's checkpoint in Ray's internal key-value store: the
target every new replica is started for), read as plain data only. Where the app qualifies
(``qualifies``: no GPU, no warm spare) and what it needs is on this node, the dyno starts there
exactly as the supervisor would start it (the same name, environment, uid, socket, container
limits), its output held until the supervisor adopts it (``adopt``, from ``make``). Where
anything is not as expected (another actor, a config Serve keeps otherwise after an upgrade, no
key, an image this node's engine lacks) it starts nothing, and the supervisor starts the dyno
as before; one the supervisor would not launch exactly so (another release) is stopped, and the
supervisor starts its own.

Why not the replica's ``runtime_env``: Ray starts a worker with one through a setup process that
imports Ray and then executes the worker (0.37 s more on every start, measured), more than the
early start gains. A process starts on the worker's main thread, so its parent-death signal
fires only when the worker process itself ends; a container on a thread of its own (its start
waits on the engine; its reaper removes it when the worker dies). Other workers (Ray's own,
Serve's controller and proxies) import this module and nothing more.
"""

from __future__ import annotations

__all__ = [
    "Early", "adopt", "applied", "environment", "install", "launch", "qualifies", "replica_name",
    "start",
]  # fmt: skip

import io
import json
import logging
import os
import pickle
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.run.dyno import ContainerDyno, ProcessDyno
    from kiln.run.spec import DynoSpec
    from kiln.sandbox import Sandbox

SERVE = "ray.serve"
DEPLOYMENT = "dyno"  # an app's one Serve deployment (kiln.run.serve_config's, from here)
REPLICA_PREFIX = "SERVE_REPLICA::"  # Serve's actor names: SERVE_REPLICA::<app>#<deployment>#<id>
# Where Serve's controller keeps the config applied through its REST API: in Ray's internal
# key-value store, namespace "serve", key "ray-serve-<the controller's namespace>-" + this.
CHECKPOINT_SUFFIX = b"-serve-app-config-checkpoint"
CHECKPOINT_NAMESPACE = b"serve"
HELD_LINES = 10_000

logger = logging.getLogger(__name__)


def replica_name(unique_id: str) -> str:
    """A replica's (and its dyno's) name in logs, metrics and sockets, from Serve's id."""
    return f"dyno.{unique_id[:6]}"


def qualifies(spec: DynoSpec, gpus: bool) -> bool:
    """Whether a release's dynos start early: on the CPU, with no warm spare (a GPU's ids are
    Ray's to give when the actor is placed; a spare is claimed, not started)."""
    return not gpus and not spec.warm_spare


def environment(spec: DynoSpec, replica: str, sandbox: Sandbox | None) -> dict[str, str]:
    """A dyno's own variables: the manifest's env, the app's config vars (opened with the
    node's ``KILN_SECRET_KEY``), its name, release and model cache."""
    from kiln.models import ArtifactKind
    from kiln.run.keeper import DynoFailed
    from kiln.vault import Vault

    key = os.environ.get("KILN_SECRET_KEY")
    if not key:
        raise DynoFailed(
            "KILN_SECRET_KEY is not set on this Ray node, so the app's config vars cannot be "
            "opened; start the node with the platform's key (kiln up does this)"
        )
    config = Vault([k.strip().encode() for k in key.split(",") if k.strip()]).open(
        spec.config_sealed
    )
    models = {}
    if spec.model_cache and spec.models:
        # The weights are in the model cache already (the release phase put them there): a
        # cold start never downloads. A container mounts only the app's own models; a slug dyno
        # sees them linked into its sandbox, the rest of the cache closed to it.
        cache = spec.model_cache
        if sandbox is not None and spec.artifact.kind is ArtifactKind.SLUG:
            cache = str(sandbox.models)  # prepare() links the model in
        models = {"HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    return {
        "PYTHONUNBUFFERED": "1",
        **spec.env,
        **config,
        "KILN_APP": spec.app,
        "KILN_RELEASE": f"v{spec.release}",
        "KILN_DYNO": replica,
        **models,
    }


def launch(
    spec: DynoSpec, replica: str, sandbox: Sandbox | None, gpus: dict[str, str]
) -> tuple[list[str], Path, dict[str, str], Path | None]:
    """A slug dyno's command, working directory, environment and socket. A process shares the
    host: it gets the host's PATH and locale, not Ray's variables, and its app's uid, HOME and
    socket."""
    from kiln.proc import host_environment

    artifact = spec.artifact
    env = {
        **host_environment(), **artifact.env, **environment(spec, replica, sandbox), **gpus,
        **(sandbox.environment() if sandbox is not None else {}),
    }  # fmt: skip
    socket = sandbox.sockets / f"{replica}.sock" if sandbox is not None else None
    return list(artifact.command), Path(artifact.reference) / "app", env, socket


def engine_url(spec: DynoSpec) -> str:
    """This node's container engine: its own DOCKER_HOST (set where it joined), else the
    head's, else the default socket."""
    return os.environ.get("DOCKER_HOST") or spec.docker_host or "unix:///var/run/docker.sock"


def dyno_for(
    spec: DynoSpec, replica: str, sandbox: Sandbox | None, host_gpus: list[str],
    share: float | None, sink: Callable[[str], None], spare: Path | None = None,
) -> ProcessDyno | ContainerDyno:  # fmt: skip
    """The dyno ``replica`` runs for ``spec`` on this node (not started): a process for a slug
    (``spare``: the warm spare it claims, if any), a container for an image, with the GPUs Ray
    gave it (``host_gpus``: the node's indices; ``share``: of one GPU)."""
    from kiln.engine import app_network
    from kiln.models import ArtifactKind
    from kiln.run.dyno import ContainerDyno, ContainerLimits, ProcessDyno, gpu_environment

    gpus = gpu_environment(host_gpus, spec.artifact.kind, share)
    if spec.artifact.kind is not ArtifactKind.IMAGE:
        command, cwd, env, socket = launch(spec, replica, sandbox, gpus)
        return ProcessDyno(command, cwd, env, sink, sandbox=sandbox, socket=socket, spare=spare)
    url = engine_url(spec)
    limits = ContainerLimits(
        network=app_network(spec.app),
        memory_bytes=spec.memory_bytes,
        pids=spec.pids_limit,
        models=tuple((f"{spec.model_cache}/{m.folder}", f"/models/{m.folder}")
                     for m in spec.models) if spec.model_cache else (),
        socket_dir=sandbox.mounts / replica if sandbox is not None else None,
    )  # fmt: skip
    return ContainerDyno(
        None, url, spec.artifact.reference,  # its engine client is made when it starts
        {**environment(spec, replica, sandbox), **gpus}, sink,
        name=f"kiln-{spec.app}-{replica.replace('.', '-')}",
        labels={"kiln.app": spec.app, "kiln.release": str(spec.release), "kiln.replica": replica},
        gpu_ids=host_gpus,
        limits=limits,
    )  # fmt: skip


def launch_key(dyno: ProcessDyno | ContainerDyno) -> tuple[Any, ...]:
    """All that decides what a dyno runs and where it is reached: two dynos with the same
    key are the same launch."""
    from kiln.run.dyno import ProcessDyno

    if isinstance(dyno, ProcessDyno):
        return ("process", dyno.command, dyno.cwd, dyno.env, dyno.socket, dyno.spare,
                dyno.sandbox)  # fmt: skip
    return ("container", dyno.engine_url, dyno.image, dyno.env, dyno.name, dyno.labels,
            dyno.gpu_ids, dyno.limits)  # fmt: skip


class _Held:
    """A dyno's output until its supervisor takes it: then the held lines first, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: deque[str] = deque(maxlen=HELD_LINES)
        self._sink: Callable[[str], None] | None = None

    def __call__(self, line: str) -> None:
        with self._lock:
            if self._sink is None:
                self._lines.append(line)
                return
            sink = self._sink
        sink(line)

    def hand_to(self, sink: Callable[[str], None]) -> None:
        with self._lock:  # the dyno's next line waits until the held ones are through
            while self._lines:
                sink(self._lines.popleft())
            self._sink = sink


@dataclass
class Early:
    """A dyno started early in this worker, for the replica ``replica``: a process at once, on
    the worker's main thread; a container on a thread of its own (``thread``), as its start
    waits on the engine."""

    replica: str
    dyno: ProcessDyno | ContainerDyno
    held: _Held
    started: float = field(default_factory=time.time)
    thread: threading.Thread | None = None
    failed: str | None = None  # why it did not start after all

    def start_container(self, spec: DynoSpec) -> None:
        """The container's start, on ``thread``; a node whose engine lacks the image (a
        cluster's: the supervisor pulls it first) starts nothing."""
        from kiln.engine import connect_engine

        try:
            if spec.image_source is not None:
                engine = connect_engine(engine_url(spec))
                if engine is None or not engine.has_image(spec.artifact.reference):
                    self.failed = "its image is not on this node yet"
                    return
            self.dyno.start()
        except Exception as exc:  # the supervisor starts it again, and says so if it fails
            self.failed = f"{type(exc).__name__}: {exc}"

    def wait(self) -> str | None:
        """Once its start is over: None if it started, else why not (blocks for a container)."""
        if self.thread is not None:
            self.thread.join()
        return self.failed


_early: Early | None = None


def adopt(
    replica: str, mine: ProcessDyno | ContainerDyno, sink: Callable[[str], None]
) -> Early | None:
    """The dyno started early for ``replica``, if any and if it is the same launch as ``mine``
    (the dyno the supervisor would start), its output now going to ``sink``; once. One that is
    not (another release, another environment) is stopped, and None returned: the supervisor
    starts its own."""
    global _early
    early, _early = _early, None
    if early is None:
        return None
    if early.replica != replica or launch_key(early.dyno) != launch_key(mine):
        early.wait()
        early.dyno.stop(1.0)
        logger.warning("the dyno started early for %s was not this replica's: stopped", replica)
        return None
    early.held.hand_to(sink)
    return early


class _Plain(pickle.Unpickler):
    """Serve's checkpoint as plain data: no class is looked up (one would import Serve)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"not plain data: {module}.{name}")


def applied(checkpoint: bytes, app: str) -> dict[str, Any] | None:
    """The app's Serve application as the platform applied it, from the controller's checkpoint
    (``(deployment_time, target_capacity, direction, {app: config})``), if it is as known."""
    try:
        stored = _Plain(io.BytesIO(checkpoint)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(stored, tuple) or len(stored) != 4 or not isinstance(stored[3], dict):
        return None
    config = stored[3].get(app)
    return config if isinstance(config, dict) else None


def _spec_of(config: dict[str, Any]) -> DynoSpec | None:
    """The release's spec in a dyno app's Serve application, when its dynos start early."""
    from kiln.run.serve_config import IMPORT_PATH
    from kiln.run.spec import DynoSpec

    deployments = config.get("deployments") or [{}]
    options = deployments[0].get("ray_actor_options") or {}
    raw = (config.get("args") or {}).get("spec")
    if config.get("import_path") != IMPORT_PATH or raw is None:
        return None
    spec = DynoSpec.model_validate(raw)
    return spec if qualifies(spec, gpus=bool(options.get("num_gpus"))) else None


def _whole_here(spec: DynoSpec) -> bool:
    """Whether what the dyno needs is on this node already (on the head, or brought by an
    earlier replica): a slug, its virtualenv and runtime, and the models. (An image is looked
    for when its container starts.)"""
    from kiln.models import ArtifactKind
    from kiln.run.depot import complete, has_revision, runtimes_of

    cache = spec.model_cache
    if cache and not all(has_revision(m.revision)(Path(cache) / m.folder) for m in spec.models):
        return False
    if spec.artifact.kind is ArtifactKind.IMAGE:
        return True
    slug = Path(spec.artifact.reference)
    if not complete(slug) or not (slug / "slug.json").is_file():
        return False
    venv = Path(json.loads((slug / "slug.json").read_text())["venv"])
    return complete(venv) and all(complete(r) for r in runtimes_of(venv))


def _deployment(actor_name: str) -> str:
    """The deployment a Serve replica's actor name names."""
    return actor_name.removeprefix(REPLICA_PREFIX).rpartition("#")[0].rpartition("#")[2]


def start(actor_name: str, checkpoint: bytes | None) -> Early | None:
    """Start the dyno of the Serve replica ``actor_name``, from Serve's ``checkpoint``, if it
    is a dyno that qualifies and what it needs is here; None where it is not."""
    from kiln.models import ArtifactKind

    rest, _, unique = actor_name.removeprefix(REPLICA_PREFIX).rpartition("#")
    app = rest.rpartition("#")[0]
    if not actor_name.startswith(REPLICA_PREFIX) or _deployment(actor_name) != DEPLOYMENT:
        return None
    if not checkpoint:
        return None
    config = applied(checkpoint, app)
    spec = _spec_of(config) if config is not None else None
    if spec is None or not _whole_here(spec):
        return None
    sandbox = spec.sandbox.ensure() if spec.sandbox is not None else None
    if sandbox is not None and spec.model_cache and spec.artifact.kind is ArtifactKind.SLUG:
        for model in spec.models:
            sandbox.link_model(Path(spec.model_cache), model.folder)
    held = _Held()
    replica = replica_name(unique)
    early = Early(replica, dyno_for(spec, replica, sandbox, [], None, held), held)
    if spec.artifact.kind is ArtifactKind.IMAGE:
        early.thread = threading.Thread(
            target=early.start_container, args=(spec,), daemon=True, name="early-dyno"
        )
        early.thread.start()
    else:
        early.dyno.start()
    return early


def _on_serve_import() -> None:
    global _early
    if threading.current_thread() is not threading.main_thread():
        return  # a dyno started here would get its parent-death signal when this thread ends
    try:
        import ray
        from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_list

        name = ray.get_runtime_context().get_actor_name() or ""
        if not name.startswith(REPLICA_PREFIX) or _deployment(name) != DEPLOYMENT:
            return  # Ray's own workers, Serve's controller and proxies, other apps' replicas
        keys = [
            k for k in _internal_kv_list(b"ray-serve-", namespace=CHECKPOINT_NAMESPACE)
            if k.endswith(CHECKPOINT_SUFFIX)
        ]  # fmt: skip
        if len(keys) == 1:  # one Serve in this cluster, as Kiln runs it
            _early = start(name, _internal_kv_get(keys[0], namespace=CHECKPOINT_NAMESPACE))
    except Exception as exc:  # never the reason a replica cannot start: its supervisor starts
        expected = type(exc).__name__ == "DynoFailed"  # the dyno, and says what failed
        logger.warning("could not start the dyno early: %s", exc, exc_info=not expected)


class _Finder:
    """Finds nothing: notes the first import of Serve, and starts the dyno there. (It stays in
    ``sys.meta_path``, done: the import system is walking that list when it asks.)"""

    done = False

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == SERVE and not self.done:
            self.done = True
            _on_serve_import()
        return None


def install() -> None:
    """Start a dyno replica's dyno when the worker first imports Serve."""
    if SERVE in sys.modules:
        return
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


install()
