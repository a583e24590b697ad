"""``python -m kiln_runtime.spare SOCKET``: a warm spare of a model runtime (llm, embeddings).

A model dyno spends most of its start importing torch and transformers (seconds). A spare does
that ahead of time: it imports the runtime and its libraries, then waits on the unix socket
SOCKET until the platform claims it for the next dyno of the same release on this node.

A claim is one connection from the platform's uid (``KILN_SPARE_OWNER``) carrying JSON
(``{"env": {...}, "cwd": "..."}``, the dyno's environment and working directory) and two
descriptors: where the dyno's output goes, and a lifeline whose other end the supervisor holds
(when it closes, the dyno is told to stop, as a dyno is when its supervisor dies). The spare then
forks: the child becomes the dyno (its clock starts there: its ``ready`` line shows the import as
done), the parent answers the child's pid, waits for it, and sends its exit code last. An
unclaimed spare leaves after ``KILN_SPARE_IDLE_S`` seconds (default 900), as soon as the
process ``KILN_SPARE_WATCH`` (the node's raylet) is gone, or once its socket is removed or
replaced (the platform removes an older release's when it leaves a newer one's).
"""

from __future__ import annotations

__all__ = ["RUNTIMES", "main"]

import contextlib
import importlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The runtimes a spare can stand in for: the module that serves each (it names what it imports).
RUNTIMES = {"llm": "kiln_runtime.llm.server", "embeddings": "kiln_runtime.embeddings.server"}
MAX_CLAIM = 1 << 20  # bytes of JSON a claim may bring


def main(argv: list[str]) -> int:
    path = Path(argv[0])
    runtime = os.environ.get("KILN_RUNTIME", "")
    if runtime not in RUNTIMES:
        print(f"kiln_runtime: no spare for the {runtime!r} runtime", file=sys.stderr)
        return 2
    if runtime == "llm" and _runs_vllm():  # (as the platform asks before it leaves a spare)
        print(
            "kiln_runtime: no spare for vLLM (its server is a process of its own)", file=sys.stderr
        )
        return 2
    server = importlib.import_module(RUNTIMES[runtime])
    for module in getattr(server, "IMPORTS", ()):
        importlib.import_module(module)
    listener, inode = _listen(path)
    try:
        claim = _wait_for_claim(listener, path, inode)
    finally:
        listener.close()
        if _still_at(path, inode):  # claimed or leaving: nobody else connects to it (unless
            path.unlink(missing_ok=True)  # another spare has taken the name)
    if claim is None:
        return 0
    connection, output, lifeline = claim.connection, claim.output, claim.lifeline
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        connection.close()
        try:
            _become_dyno(claim.env, claim.cwd, output, lifeline)
            from kiln_runtime.__main__ import main as run

            sys.argv = ["kiln_runtime"]
            run()
        except SystemExit:
            raise
        except BaseException:  # the dyno's output is the supervisor's now: say why, and go
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
        return 0
    os.close(output)
    os.close(lifeline)
    try:
        connection.sendall(f"{child}\n".encode())
    except OSError:
        os.kill(child, signal.SIGTERM)  # the supervisor left before it got the pid
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    with contextlib.suppress(OSError):
        connection.sendall(f"{code}\n".encode())
    connection.close()
    return 0


def _runs_vllm() -> bool:
    from kiln_runtime.llm.vllm_server import chosen

    return chosen()


def _listen(path: Path) -> tuple[socket.socket, int]:
    """Listen at ``path`` once ready: bound under another name, then renamed into place, so a
    claimant never finds a socket that does not accept yet. Returns the socket file's inode."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.unlink(missing_ok=True)
    listener.bind(str(scratch))
    listener.listen(4)
    inode = scratch.stat().st_ino
    scratch.rename(path)
    return listener, inode


@dataclass
class Claim:
    connection: socket.socket  # the platform's: the child's pid, then its exit code, go back on it
    env: dict[str, str]
    cwd: str
    output: int  # where the dyno writes (its stdout and stderr)
    lifeline: int  # reads end-of-file when the supervisor is gone


def _wait_for_claim(listener: socket.socket, path: Path, inode: int) -> Claim | None:
    """A claim, or None once the spare should leave: idle too long, its node gone, or its
    socket removed or replaced (the app destroyed, or a newer release's spare in its place)."""
    idle_until = time.monotonic() + float(os.environ.get("KILN_SPARE_IDLE_S", "900"))
    watch = int(os.environ.get("KILN_SPARE_WATCH", "0"))
    owner = int(os.environ.get("KILN_SPARE_OWNER", "0"))
    while time.monotonic() < idle_until and _alive(watch) and _still_at(path, inode):
        ready, _, _ = select.select([listener], [], [], 1.0)
        if not ready:
            continue
        connection, _ = listener.accept()
        claim = _read_claim(connection, owner)
        if claim is not None:
            return claim
        connection.close()
    return None


def _read_claim(connection: socket.socket, owner: int) -> Claim | None:
    """The claim on ``connection``, if it comes from the platform's uid and is whole."""
    creds = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    uid = int.from_bytes(creds[4:8], sys.byteorder)
    if uid not in (0, owner):
        return None  # another uid (the app's own code, say) may not take it
    connection.settimeout(10)
    fds: list[int] = []
    try:
        data, fds, _flags, _address = socket.recv_fds(connection, MAX_CLAIM, 2)
        while len(data) < MAX_CLAIM and (more := connection.recv(MAX_CLAIM)):
            data += more
        body: Any = json.loads(data)
    except (OSError, ValueError):
        body = None
    if len(fds) != 2 or not isinstance(body, dict) or not isinstance(body.get("env"), dict):
        for fd in fds:
            os.close(fd)
        return None
    connection.settimeout(None)
    env = {str(k): str(v) for k, v in body["env"].items()}
    return Claim(connection, env, str(body.get("cwd", ".")), fds[0], fds[1])


def _still_at(path: Path, inode: int) -> bool:
    try:
        return path.stat().st_ino == inode
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """Whether process ``pid`` (not ours: the raylet) exists; 0: nothing to watch."""
    try:
        if pid > 0:
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another uid's: it exists
    return True


def _become_dyno(env: dict[str, str], cwd: str, output: int, lifeline: int) -> None:
    """In the child: the dyno's environment, directory and output; it stops (SIGTERM, as its
    supervisor's death would have it) when the lifeline closes."""
    os.dup2(output, 1)  # first: whatever fails next is told where the supervisor reads
    os.dup2(output, 2)
    os.close(output)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)

    def watch() -> None:
        while os.read(lifeline, 1):
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="kiln-lifeline", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
