"""What every artifact builder is given and must provide (image and slug builders)."""

from __future__ import annotations

__all__ = ["ArtifactBuilder", "BuildJob", "run_streaming"]

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kiln.builds.log import BuildLog
from kiln.manifest import Manifest
from kiln.models import Artifact, ArtifactKind
from kiln.sandbox import Sandbox
from kiln_runtime.plan import BuildPlan


@dataclass(frozen=True)
class BuildJob:
    app: str
    build_id: int
    source: Path  # the extracted app, owned by this build
    source_digest: str
    plan: BuildPlan
    manifest: Manifest | None
    workdir: Path  # scratch space, removed after the build
    sandbox: Sandbox | None = None  # where and as whom the app's own code runs (slugs)


class ArtifactBuilder(Protocol):
    kind: ArtifactKind

    def describe(self) -> str: ...
    def build(self, job: BuildJob, log: BuildLog) -> Artifact: ...
    def run_once(
        self, artifact: Artifact, command: str, env: dict[str, str],
        on_line: Callable[[str], None], timeout_s: float, sandbox: Sandbox | None = None,
    ) -> int | None:  # fmt: skip
        """Run COMMAND (a shell line) once where ARTIFACT's dynos run, with ENV over what the
        artifact sets, kept apart as the app's dynos are (``sandbox``): the release phase.
        Returns the exit code, None if it was stopped at TIMEOUT_S."""
        ...


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
