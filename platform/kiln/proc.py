"""Processes, as every stage runs them: a command's output line by line (with a time limit and,
for an app's code, the app's uid), the host environment a process on the host gets, whether a
PID still runs, a log's last lines, and a job the control plane repeats on a thread of its own.
"""

from __future__ import annotations

__all__ = ["Every", "alive", "host_environment", "log_tail", "run_streaming", "running_pid"]

import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiln.sandbox import Sandbox


def run_streaming(
    command: Sequence[str], on_line: Callable[[str], None], *, env: Mapping[str, str] | None = None,
    cwd: Path | None = None, timeout_s: float | None = None, as_sandbox: Sandbox | None = None,
) -> tuple[int, list[str]]:  # fmt: skip
    """Run a command, passing each output line on as it comes; returns (exit code, all lines).
    Past TIMEOUT_S its process group is killed, and TimeoutError raised once it has ended.
    With ``as_sandbox``, it runs as that app's uid (``kiln.sandbox``)."""
    lines: list[str] = []
    options = as_sandbox.process_options() if as_sandbox is not None else {}
    with subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        errors="replace", env=dict(env) if env is not None else None, cwd=cwd,
        start_new_session=timeout_s is not None, stdin=subprocess.DEVNULL, **options,
    ) as process:  # fmt: skip
        killer, fired = None, threading.Event()
        if timeout_s is not None:
            killer = threading.Timer(timeout_s, _kill_group, (process.pid, fired))
            killer.start()
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.rstrip()
                lines.append(line)
                on_line(line)
        finally:
            if killer is not None:
                killer.cancel()
    if fired.is_set():
        raise TimeoutError(f"{command[0]} was stopped after {timeout_s:g} s")
    return process.returncode, lines


def _kill_group(pid: int, fired: threading.Event) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        os.killpg(pid, signal.SIGKILL)
        fired.set()


_HOST_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "HF_HOME", "HF_HUB_OFFLINE")


def host_environment() -> dict[str, str]:
    """What a process on the host (a slug's dyno, its release command) takes from the host's
    environment: PATH and locale, never Ray's variables. A container has the image's own."""
    return {k: os.environ[k] for k in _HOST_ENV if k in os.environ}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as gone
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def running_pid(pid_file: Path) -> int | None:
    """The PID a pid file names, if that process is alive; None otherwise."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Every:
    """``job`` every ``interval_s`` on a daemon thread named ``name``, until ``stop``; a job
    that raises is logged (``failure``) and the next one runs anyway."""

    def __init__(
        self, name: str, interval_s: float, job: Callable[[], object], failure: str
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self.job = job
        self.failure = failure
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.job()
            except Exception:
                logging.getLogger(__name__).exception(self.failure)
