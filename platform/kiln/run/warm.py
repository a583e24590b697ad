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

__all__ = ["IMPORTS", "KEEP_ALIVE_S", "claim", "directory", "leave", "prestart", "taken",
           "top_up", "waiting"]  # fmt: skip

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

IMPORTS = ("ray.serve._private.replica", "kiln.run.supervisor")
WANTED = "KILN_WARM_WORKERS"  # per node; set on every Ray node by kiln.run.cluster
KEEP_ALIVE_S = 30 * 24 * 3600  # Ray's reaper of idle workers spares a prestarted one this long
UNCLAIMED_S = 60.0  # a token no worker took by then: its worker never started
READY = b"ready"
WORKER_MODE = 1  # ray._private.worker.WORKER_MODE, without importing Ray here

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
    """How many warm workers this node keeps (``KILN_WARM_WORKERS``; 0: none)."""
    try:
        return max(0, int(os.environ.get(WANTED, "1")))
    except ValueError:
        return 1


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
            except FileNotFoundError:
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
    except FileNotFoundError:
        return None
    return max(0.0, age)


def _title(pid: int) -> bytes | None:
    """A process's command line as Ray retitles its workers (``ray::IDLE`` while idle)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def waiting(
    folder: Path, now: float, title: Callable[[int], bytes | None] = _title
) -> int:  # fmt: skip
    """Warm workers waiting on this node: idle and ready, still importing, or asked for and not
    started yet. Marks that no longer say so go: a dead worker's, one something else took, a
    token no worker claimed in time."""
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
                ready = path.read_bytes() == READY
                if shown is not None and (
                    (ready and shown.startswith(b"ray::IDLE")) or (not ready and age < UNCLAIMED_S)
                ):  # fmt: skip
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


def top_up(folder: Path, want: int, ask: Callable[[int], None]) -> int:
    """Ask (``ask(n)``) for as many warm workers as this node lacks of ``want``, a token for
    each; how many it asked for. Tokens of a failed ask are taken back."""
    if want <= 0:
        return 0
    folder.mkdir(mode=0o700, exist_ok=True)
    with _locked(folder):
        lacking = want - waiting(folder, time.time())
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
    folder, want = directory(), wanted()
    if folder is None or want == 0:
        return None

    def ask() -> None:
        try:
            top_up(folder, want, prestart)
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
    folder, pid = directory(), os.getpid()
    if folder is None or not claim(folder, pid):
        return
    try:
        warm_up(folder, pid)
    except Exception:  # it serves as any new worker would: cold
        logger.warning("could not warm this worker up", exc_info=True)


_preload()
