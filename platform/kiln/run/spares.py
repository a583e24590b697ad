"""Warm spares: a model runtime's process with its libraries imported, waiting for the next dyno.

``[scaling] warm_spare = true`` (llm and embeddings slugs): once a supervisor's dyno serves, it
leaves a spare on its node (``python -m kiln_runtime.spare``, as the app's uid, in the app's
sandbox; started through ``setsid -f``, so it is nobody's child and outlives the replica: scale
to zero, and the next replica there still finds it). Only a replica's first start leaves one.
The next supervisor of the same release on that node claims it instead of starting a process:
it skips importing torch and transformers, most of a model dyno's start. The spare imports torch
without initialising CUDA; the claim brings the dyno's GPUs. A spare leaves when unclaimed for
``KILN_SPARE_IDLE_S`` (900 s), when the node's raylet goes, or when its socket is removed. It
holds what it imported in memory meanwhile (an llm runtime's: about 400 MB).

    path = spare_socket(box, key)
    start_spare(command, cwd, env, box, path)   # after this dyno is healthy
    claimed = claim(path, env, cwd)             # the next dyno; None: start one as usual
"""

from __future__ import annotations

__all__ = ["Claimed", "claim", "runs_vllm", "spare_key", "spare_socket", "start_spare"]

import contextlib
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from kiln.run.sockets import PinnedSocket
from kiln.sandbox import Sandbox

IDLE_S = 900  # an unclaimed spare's life, unless KILN_SPARE_IDLE_S says otherwise
CLAIM_TIMEOUT_S = 5.0  # a spare answers its pid at once; one that does not is not used


def spare_key(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    """What makes two dynos interchangeable: the same command, directory and environment (a new
    release, a config change, another node's paths: another key)."""
    blob = json.dumps([command, str(cwd), sorted(env.items())])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def spare_socket(box: Sandbox, key: str) -> Path:
    return box.sockets / f"spare-{key}.sock"


# The runtime's own choice of engine, made by the dyno's Python in the dyno's environment.
VLLM_CHECK = "import sys; from kiln_runtime.llm.vllm_server import chosen; sys.exit(not chosen())"


def runs_vllm(command: list[str], cwd: Path, env: dict[str, str], box: Sandbox | None) -> bool:
    """Whether this llm dyno runs vLLM's server, whose engine is a process of its own that no
    spare can start ahead: ``[llm] engine = "vllm"``, or "auto" with vLLM in the dyno's
    environment (the runtime's own choice, asked of the dyno's Python as the app's uid)."""
    if env.get("KILN_RUNTIME") != "llm":
        return False
    options = box.process_options() if box is not None else {}
    found = subprocess.run(
        [command[0], "-c", VLLM_CHECK], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=30, **options,
    )  # fmt: skip
    return found.returncode == 0


def start_spare(
    command: list[str], cwd: Path, env: dict[str, str], box: Sandbox | None, path: Path,
    watch: int | None = None,
) -> bool:  # fmt: skip
    """Leave a spare listening at ``path`` unless one does already; True if one was started.
    ``command`` is the dyno's (``python -m kiln_runtime``): the spare runs its Python. It
    leaves when the process ``watch`` does (default: this one's parent, for a Ray worker the
    raylet)."""
    if _listening(path, box.uid if box is not None else None):
        return False
    options = box.process_options() if box is not None else {}
    # The platform's idle limit, not one the app's [env] could stretch on a shared node.
    spare_env = {**env, "KILN_SPARE_WATCH": str(watch or os.getppid()),
                 "KILN_SPARE_OWNER": str(os.getuid()),
                 "KILN_SPARE_IDLE_S": os.environ.get("KILN_SPARE_IDLE_S", str(IDLE_S))}  # fmt: skip
    # setsid -f: the spare's parent exits at once, so it is nobody's child here (Ray stops a
    # worker's children with it) and keeps no terminal or process group of the replica's.
    setsid = shutil.which("setsid")  # the platform's, not one on a PATH the app's env names
    if setsid is None:
        raise OSError("setsid (util-linux) is not installed")
    subprocess.run(
        [setsid, "-f", command[0], "-m", "kiln_runtime.spare", str(path)],
        cwd=cwd, env=spare_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, check=False, timeout=30, **options,
    )  # fmt: skip
    # Spares of the app's other releases (or config) here: newer dynos claim this one; each
    # leaves within a second of its socket going. (During a canary, each release's replicas
    # remove the other's: a spare is then only a chance, never relied on.)
    for other in path.parent.glob("spare-*.sock"):
        if other != path:
            other.unlink(missing_ok=True)
    return True


def _listening(path: Path, uid: int | None) -> bool:
    connection = _connect(path, uid, 1.0)
    if connection is None:
        return False
    connection.close()  # (the spare takes the empty connection for a claim that came to nothing)
    return True


def _connect(path: Path, uid: int | None, timeout_s: float) -> socket.socket | None:
    """A connection to what listens at ``path``, or None. The app's uid can write there, so:
    never through a link (the socket is pinned, as a dyno's is), only to a socket of ``uid``
    (None: no check), and only if the process that answers runs as ``uid`` too; before a word
    is sent."""
    pinned = PinnedSocket(path)
    where = pinned.pin()
    if where is None:
        return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(timeout_s)
    try:
        if uid is not None and Path(where).stat().st_uid != uid:
            raise PermissionError(f"{path} is not the app's")
        connection.connect(where)
        if uid is not None and _peer(connection)[1] != uid:
            raise PermissionError(f"what answers at {path} does not run as the app's uid")
    except OSError:
        connection.close()
        return None
    finally:
        pinned.close()
    return connection


def _peer(connection: socket.socket) -> tuple[int, int]:
    """The pid and uid of the process at the other end of ``connection``."""
    creds = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


@dataclass
class Claimed:
    """A dyno that was a spare: its pid, the output it writes, and its exit code once known.
    Whether it runs is read from its pidfd (not from the spare's parent, which could die first);
    its exit code comes from that parent (-1 where the parent could not tell it)."""

    pid: int
    output: BinaryIO
    _connection: socket.socket
    _reader: BinaryIO  # the connection's: the exit code comes on it
    _lifeline: int
    _pidfd: int  # the dyno itself: signals reach it, never a process that took its pid later
    code: int | None = None
    _told: threading.Event = field(default_factory=threading.Event)  # the parent said (or left)
    _closed: bool = False

    def __post_init__(self) -> None:
        threading.Thread(target=self._wait, name="spare-exit", daemon=True).start()

    def _wait(self) -> None:
        """The spare's parent sends the dyno's exit code when it ends."""
        with contextlib.suppress(OSError, ValueError):
            line = self._reader.readline()
            self.code = int(line) if line.strip() else None
        self._told.set()

    def alive(self) -> bool:
        return not self._closed and not self._exited(0)

    def exit_code(self) -> int | None:
        if self.alive():
            return None
        self._told.wait(1.0)  # the parent's word follows the exit by a moment
        return self.code if self.code is not None else -1

    def _exited(self, wait_s: float) -> bool:
        """Whether the dyno has exited, waiting up to ``wait_s`` for it (its pidfd turns
        readable then)."""
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        return bool(poller.poll(int(wait_s * 1000)))

    def stop(self, timeout_s: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; then let go of its descriptors."""
        if self._closed:
            return
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            if self._exited(0):
                break
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)
            self._exited(wait_s)
        self._told.wait(1.0)
        self._closed = True
        for fd in (self._lifeline, self._pidfd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._connection.close()


def claim(path: Path, env: dict[str, str], cwd: Path, uid: int | None = None) -> Claimed | None:
    """The spare at ``path`` as this dyno (``env``, in ``cwd``), or None where there is none
    that answers as a spare must: the caller then starts a process as usual. The app's uid can
    write where spares listen, so what answers is checked: the process on the other end runs as
    ``uid`` (the app's; None: no check) and the pid it names is its own child, the same uid."""
    connection = _connect(path, uid, CLAIM_TIMEOUT_S)
    if connection is None:
        return None
    out_read, out_write = os.pipe()
    life_read, life_write = os.pipe()
    try:
        body = json.dumps({"env": env, "cwd": str(cwd)}).encode()
        socket.send_fds(connection, [body[:4096]], [out_write, life_read])
        connection.sendall(body[4096:])
        connection.shutdown(socket.SHUT_WR)
        reader = connection.makefile("rb")
        pid = int(reader.readline())
        connection.settimeout(None)  # the exit code comes when the dyno ends
        pidfd = os.pidfd_open(pid)
        if not _child_of_peer(connection, pid):
            os.close(pidfd)
            raise ValueError(f"pid {pid} is not the spare's own child")
    except (OSError, ValueError):
        for fd in (out_read, life_write):
            os.close(fd)
        connection.close()
        return None
    finally:
        os.close(out_write)
        os.close(life_read)
    return Claimed(pid, os.fdopen(out_read, "rb"), connection, reader, life_write, pidfd)


def _child_of_peer(connection: socket.socket, pid: int) -> bool:
    """Whether ``pid`` is a child of the process on the other end of ``connection``, of the same
    uid (which ``_connect`` checked is the app's)."""
    peer_pid, peer_uid = _peer(connection)
    try:
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        parent, owner = int(status["PPid"]), int(status["Uid"].split()[0])
    except (OSError, KeyError, ValueError):
        return False
    return parent == peer_pid and owner == peer_uid
