"""Running a release's artifact once, where and as its dynos would run: kiln.toml's release
command (migrations, a warm-up), before the release exists.

    code = run_once(artifact, "python manage.py migrate", env, print, 900, sandbox=box, engine=e)
"""

from __future__ import annotations

__all__ = ["run_once"]

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiln.engine import ContainerEngine, app_network
from kiln.errors import Unavailable
from kiln.models import Artifact, ArtifactKind
from kiln.proc import host_environment, run_streaming
from kiln.sandbox import Sandbox


def run_once(
    artifact: Artifact, command: str, env: dict[str, str], on_line: Callable[[str], None],
    timeout_s: float, *, sandbox: Sandbox, engine: ContainerEngine | None,
) -> int | None:  # fmt: skip
    """Run COMMAND (a shell line) once with ENV over what the artifact sets, each output line to
    ON_LINE; its exit code, None if it was stopped at TIMEOUT_S.

    A slug: in its app directory, its virtualenv first on PATH, as the app's uid with its HOME.
    An image: in a fresh container (removed after) in the app's own network, with a dyno's
    limits."""
    if artifact.kind is ArtifactKind.SLUG:
        venv_bin = Path(artifact.command[0]).parent
        host = host_environment()
        path = f"{venv_bin}{os.pathsep}{host.get('PATH', '/usr/bin:/bin')}"
        full = {**host, **artifact.env, **env, "PATH": path, "VIRTUAL_ENV": str(venv_bin.parent),
                **sandbox.environment()}  # fmt: skip
        try:
            code, _lines = run_streaming(
                ["/bin/sh", "-c", command], on_line, env=full,
                cwd=Path(artifact.reference) / "app", timeout_s=timeout_s, as_sandbox=sandbox,
            )  # fmt: skip
        except TimeoutError:
            return None
        return code
    if engine is None:
        raise Unavailable(
            f"the release command needs the container engine that built {artifact.reference}, "
            "and none answers; start it (or set DOCKER_HOST) and deploy again",
            code="no_engine",
        )
    options: dict[str, Any] = {"security_opt": ["no-new-privileges"], "pids_limit": 4096,
                               "network": engine.ensure_network(app_network(sandbox.app))}  # fmt: skip
    return engine.run(artifact.reference, command, env, on_line, timeout_s, options)
