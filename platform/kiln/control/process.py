"""The control plane as a background process: a pid file, start-and-wait, and stop by PID.

Processes are only ever stopped by the PID this module recorded, never by name.
"""

from __future__ import annotations

__all__ = ["PidFile", "start_detached", "stop"]

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from kiln.errors import Conflict, KilnError, NotFound
from kiln.proc import alive, log_tail, running_pid
from kiln.settings import Settings


def _is_kiln(pid: int) -> bool:
    """Guard against a recycled PID: the process must be a ``kiln up``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return alive(pid)
    return any(b"kiln" in part for part in cmdline) and b"up" in cmdline


class PidFile:
    def __init__(self, home: Path) -> None:
        self.path = home / "run" / "kiln.pid"

    def read(self) -> int | None:
        pid = running_pid(self.path)
        return pid if pid is not None and _is_kiln(pid) else None

    def claim(self) -> None:
        running = self.read()
        if running is not None and running != os.getpid():
            raise Conflict(
                f"Kiln is already running from {self.path.parent.parent} (pid {running}); "
                "stop it with kiln down, or use another --home",
                code="already_running",
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{os.getpid()}\n")

    def release(self) -> None:
        if self.read() in (None, os.getpid()):
            self.path.unlink(missing_ok=True)


def log_path(home: Path) -> Path:
    return home / "logs" / "kiln.log"


def start_detached(
    settings: Settings, timeout_s: float = 180.0, say: Callable[[str], None] | None = None
) -> int:
    """Start ``kiln up`` in the background and return its PID once its API answers and, when it
    brings deployed apps back, once they serve again (or it says which do not); what it does
    meanwhile (its log's new lines: starting Ray, ...) goes to ``say`` as it happens."""
    running = PidFile(settings.home).read()
    if running is not None:
        raise Conflict(
            f"Kiln is already running from {settings.home} (pid {running}); kiln down stops it",
            code="already_running",
        )
    log = log_path(settings.home)
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "kiln", "up", "--home", str(settings.home),
               "--api-host", settings.api_host, "--api-port", str(settings.api_port),
               "--http-port", str(settings.http_port)]  # fmt: skip
    if not settings.run:
        command.append("--no-run")
    if settings.ray_address:
        command += ["--ray-address", settings.ray_address]
    if settings.cluster_address:
        command += ["--cluster", settings.cluster_address]
    seen = log.stat().st_size if log.exists() else 0
    said: list[str] = []

    def hear(line: str) -> None:
        said.append(line)
        if say is not None:
            say(line)

    with log.open("ab") as out:
        child = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    answered = False
    while time.monotonic() < deadline:
        seen = _follow(log, seen, hear)
        if answered and _back(said):
            return child.pid
        if child.poll() is not None:
            raise KilnError(
                f"kiln up exited with code {child.returncode} "
                f"{'while bringing apps back' if answered else 'before answering'}; its log "
                f"({log}) ends with:\n{log_tail(log)}",
                code="start_failed",
            )
        if not answered:
            with contextlib.suppress(httpx.TransportError):
                answered = httpx.get(f"{settings.api_url}/healthz", timeout=1.0).status_code == 200
        time.sleep(0.1)
    if answered:  # up, with apps still coming back: say so rather than fail
        hear(f"-----> Apps still coming back after {timeout_s:.0f}s: kiln ps -a APP says why")
        return child.pid
    child.terminate()
    raise KilnError(
        f"kiln up did not answer on {settings.api_url} within {timeout_s:.0f}s; see {log}",
        code="start_timeout",
    )


def _back(said: list[str]) -> bool:
    """Whether the control plane has nothing left to bring back (it prints the reconciler's
    lines before its API answers, so "Bringing back" is there by then if it applies)."""
    from kiln.run.reconciler import BRINGING_BACK, EVERY_APP_SERVES, NOT_EVERY_APP_SERVES

    if not any(line.startswith(BRINGING_BACK) for line in said):
        return True
    return any(line.startswith((EVERY_APP_SERVES, NOT_EVERY_APP_SERVES)) for line in said)


def _follow(log: Path, offset: int, say: Callable[[str], None]) -> int:
    """Say the log's whole lines after ``offset``; the offset after them."""
    with log.open("rb") as file:
        file.seek(offset)
        chunk = file.read()
    whole = chunk[: chunk.rfind(b"\n") + 1]
    for line in whole.decode(errors="replace").splitlines():
        if line.strip():
            say(line)
    return offset + len(whole)


def stop(home: Path, timeout_s: float = 20.0) -> int:
    """Stop the control plane recorded in ``home``'s pid file: SIGTERM, then SIGKILL."""
    pid_file = PidFile(home)
    pid = pid_file.read()
    if pid is None:
        pid_file.path.unlink(missing_ok=True)
        raise NotFound(
            f"Kiln is not running from {home}; start it with kiln up", code="not_running"
        )
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    pid_file.path.unlink(missing_ok=True)
    return pid
