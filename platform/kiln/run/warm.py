"""Warm workers: Ray worker processes a node starts ahead of need, with Serve's replica and
Kiln's supervisor already imported, so that the next replica placed there (from zero replicas,
or one more under load) starts at once instead of after a new process's start and imports.

Ray hands a new actor an idle worker when one fits (one started for no job, or for the actor's
job, with the same runtime environment: a replica's is empty), and starts a new process
otherwise: about a second of CPU on a small machine (``import ray``, then Serve's replica with
FastAPI, Starlette and pydantic, then the supervisor) before the replica's constructor runs.
Idle workers do not last by themselves, so each supervisor, once its dyno serves, tops its node
up to ``KILN_WARM_WORKERS`` (default 1): it asks the node's raylet to start that many more and
keep them while idle (Ray's ``PrestartWorkers`` call), and leaves one token per worker in the
node's Ray session directory (private to the platform's user; a new Ray session starts empty).

Every worker of Kiln's cluster preloads this module. One that claims a token at its start is
such a worker: it imports what a replica needs and marks itself ready. Others import nothing
here: a worker cannot tell whether Ray started it for a waiting actor (whose dyno then starts
early, ``kiln.run.early``, at the actor's own import of Serve) or ahead of need, which only
the token says. A replica's supervisor takes its worker's mark (``taken``) and says in the
release log that it started warm.
"""

from __future__ import annotations

__all__ = ["IMPORTS", "KEEP_ALIVE_S", "claim", "directory", "idle_workers", "leave", "preloaded",
           "prestart", "taken", "top_up", "waiting", "wanted"]  # fmt: skip

import contextlib
import fcntl
import importlib
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from kiln.run.early import SERVE  # preloaded before this module: no cost

IMPORTS = ("ray.serve._private.replica", "kiln.run.supervisor")
WANTED = "KILN_WARM_WORKERS"  # per node; set on every Ray node by kiln.run.cluster
KEEP_ALIVE_S = 30 * 24 * 3600  # Ray's reaper of idle workers spares a prestarted one this long
UNCLAIMED_S = 60.0  # a token no worker took by then: its worker never started
READY = b"ready"
WORKER_MODE = 1  # ray._private.worker.WORKER_MODE, without importing Ray here
PRELOAD = "RAY_preload_python_modules"  # Ray's config names are case-sensitive
RAYLET_PID = "RAY_RAYLET_PID"  # Ray sets it for each worker it starts
IDLE = b"ray::IDLE"  # how Ray titles an idle worker (its /proc cmdline)
WARM_MIN_S = 1.0  # a worker ready for less than this before a replica's constructor was
# likely started for that very replica (one Ray started for it took a token meanwhile)

logger = logging.getLogger(__name__)


def directory() -> Path | None:
    """This node's tokens and marks, in the Ray session directory of this process's node (a
    Ray worker's or driver's); None outside Ray."""
    worker = sys.modules.get("ray._private.worker")
    node = getattr(worker, "_global_node", None)
    if node is None:
        return None
    return Path(node.get_session_dir_path()) / "kiln-warm"


def wanted() -> int:
    """How many idle workers this node keeps (``KILN_WARM_WORKERS``, at most 16; 0: none)."""
    try:
        return min(16, max(0, int(os.environ.get(WANTED, "1"))))
    except ValueError:
        return 1


def preloaded() -> bool:
    """Whether this node's workers preload this module (Kiln's nodes do; a Ray cluster of the
    operator's own may not): elsewhere a prestarted worker would never claim its token."""
    return __name__ in os.environ.get(PRELOAD, "").split(",")


def claim(folder: Path, pid: int) -> bool:
    """In a starting worker: take a waiting token (it becomes ``held-<pid>``); False if none."""
    try:
        tokens = sorted(p for p in folder.iterdir() if p.name.startswith("want-"))
    except OSError:
        return False
    for token in tokens:
        if token.name.startswith("want-"):
            try:
                token.rename(folder / f"held-{pid}")
            except OSError:
                continue  # another starting worker took it
            return True
    return False


def warm_up(folder: Path, pid: int) -> None:
    """Import what a replica needs, then mark this worker ready."""
    for module in IMPORTS:
        importlib.import_module(module)
    (folder / f"held-{pid}").write_bytes(READY)


def taken(folder: Path | None, pid: int) -> float | None:
    """In a replica's constructor: how long ago this worker was made warm, or None if it was
    not. Its mark goes: it no longer waits."""
    if folder is None:
        return None
    mark = folder / f"held-{pid}"
    try:
        age = time.time() - mark.stat().st_mtime
        mark.unlink()
    except OSError:
        return None
    return max(0.0, age)


def _title(pid: int, proc: Path = Path("/proc")) -> bytes | None:
    """A process's command line as Ray retitles its workers (``ray::IDLE`` while idle)."""
    try:
        return (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None


def idle_workers(raylet: int, proc: Path = Path("/proc")) -> int:
    """The idle Ray workers of the raylet ``raylet`` (its children titled ``ray::IDLE``), warm
    or not: Ray hands any of them to the next replica, and each counts against the wanted."""
    count = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == raylet and (_title(int(entry.name), proc) or b"").startswith(IDLE):
                count += 1
        except (OSError, ValueError, IndexError):
            continue
    return count


def waiting(
    folder: Path, now: float, title: Callable[[int], bytes | None] = _title
) -> int:  # fmt: skip
    """Warm workers on their way: asked for and not started yet, or still importing (idle ones
    are counted apart, ``idle_workers``). Marks that no longer say anything go: a dead worker's,
    one something else took, a token no worker claimed in time."""
    count = 0
    for entry in os.scandir(folder):
        kind, _, rest = entry.name.partition("-")
        path = Path(entry.path)
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
            if kind == "want" and entry.is_file(follow_symlinks=False) and age < UNCLAIMED_S:
                count += 1
                continue
            if kind == "held" and rest.isdigit() and entry.is_file(follow_symlinks=False):
                shown = title(int(rest))
                idle = shown is not None and shown.startswith(IDLE)
                if path.read_bytes() == READY:
                    if idle:
                        continue  # waits for a replica, counted among the idle
                elif shown is not None and age < UNCLAIMED_S:
                    if not idle:  # importing; Ray may have titled it idle already (counted so)
                        count += 1
                    continue
            if kind in ("want", "held"):
                path.unlink()
        except FileNotFoundError:
            continue  # claimed or taken meanwhile
    return count


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One top-up per node at a time (replicas scaling up together would each ask)."""
    with (folder / "lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def top_up(
    folder: Path, want: int, ask: Callable[[int], None], idle: Callable[[], int] = lambda: 0
) -> int:  # fmt: skip
    """Ask (``ask(n)``) for as many warm workers as this node lacks of ``want`` (counting its
    ``idle`` workers and those on their way), a token for each; how many it asked for. Tokens
    of a failed ask are taken back."""
    if want <= 0:
        return 0
    folder.mkdir(mode=0o700, exist_ok=True)
    with _locked(folder):
        lacking = want - idle() - waiting(folder, time.time())
        if lacking <= 0:
            return 0
        tokens = [folder / f"want-{uuid.uuid4().hex}" for _ in range(lacking)]
        for token in tokens:
            token.touch(mode=0o600)
        try:
            ask(lacking)
        except BaseException:
            for token in tokens:
                token.unlink(missing_ok=True)
            raise
    return lacking


def prestart(count: int) -> None:
    """Ask this process's node's raylet to start ``count`` Python workers for no job, with no
    runtime environment, kept while idle (``KEEP_ALIVE_S``)."""
    import grpc
    from ray._private import worker
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]
    from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc

    node = worker._global_node
    if node is None:
        raise RuntimeError("not connected to Ray")
    tokens = AuthenticationTokenLoader.instance()
    metadata = tuple(tokens.get_token_for_http_header().items()) if tokens.has_token() else ()
    request = node_manager_pb2.PrestartWorkersRequest(
        language=common_pb2.PYTHON,
        num_workers=count,
        keep_alive_duration_secs=KEEP_ALIVE_S,
    )
    with grpc.insecure_channel(f"{node.node_ip_address}:{node.node_manager_port}") as channel:
        stub = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
        stub.PrestartWorkers(request, timeout=10, metadata=metadata)


def leave(after_s: float) -> threading.Timer | None:
    """Top this node up ``after_s`` from now (a new worker's start takes CPU: not while a
    replica starts), on a thread of its own; None outside Ray or where none are wanted."""
    folder, want, raylet = directory(), wanted(), os.environ.get(RAYLET_PID, "")
    if folder is None or want == 0 or not preloaded() or not raylet.isdigit():
        return None

    def ask() -> None:
        try:
            top_up(folder, want, prestart, lambda: idle_workers(int(raylet)))
        except Exception as exc:  # the next replica starts a worker as Ray would anyway
            logger.warning("could not start a warm worker on this node: %s", exc)

    timer = threading.Timer(after_s, ask)
    timer.daemon = True
    timer.start()
    return timer


def _preload() -> None:
    """At a Ray worker's start (its preload): warm up if a token waits for a worker."""
    worker = sys.modules.get("ray._private.worker")
    if worker is None or getattr(worker.global_worker, "mode", None) != WORKER_MODE:
        return
    if SERVE in sys.modules:
        return  # not a worker's preload: a replica importing the supervisor (no preload here)
    try:
        folder, pid = directory(), os.getpid()
        if folder is not None and claim(folder, pid):
            warm_up(folder, pid)
    except Exception:  # never the reason a worker cannot start: it serves as a cold one
        logger.warning("could not warm this worker up", exc_info=True)


_preload()
