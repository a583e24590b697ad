"""Each app's bare git repository under ``$KILN_HOME/repos``, with Kiln's pre-receive hook."""

from __future__ import annotations

__all__ = ["DEPLOY_BRANCHES", "ensure_repo", "repo_path"]

import shlex
import subprocess
import sys
import threading
from pathlib import Path

from kiln import names

DEPLOY_BRANCHES = ("refs/heads/main", "refs/heads/master")
_HOOK = """#!/bin/sh
# Kiln: build and release the pushed commit; a failed build rejects the push.
exec {python} -m kiln.git.hook
"""


def repo_path(home: Path, app: str) -> Path:
    return home / "repos" / f"{names.app_name(app)}.git"


def ensure_repo(home: Path, app: str, max_input_bytes: int | None = None) -> Path:
    """The app's bare repository, created on first use (idempotent); git itself refuses a
    push's pack past ``max_input_bytes`` (the upload limit)."""
    with _ensuring:  # pushes at once: git refuses two writers of one config ("could not lock")
        return _ensure(repo_path(home, app), max_input_bytes)


_ensuring = threading.Lock()


def _ensure(path: Path, max_input_bytes: int | None) -> Path:
    if not (path / "HEAD").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(path)], check=True
        )
        for key, value in (
            ("http.receivepack", "true"),
            ("receive.denyNonFastForwards", "false"),  # force pushes roll back to old commits
            ("receive.denyDeletes", "true"),
            ("core.sharedRepository", "false"),
        ):
            subprocess.run(["git", "-C", str(path), "config", key, value], check=True)
    current = subprocess.run(
        ["git", "-C", str(path), "config", "--get", "receive.maxInputSize"],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    if max_input_bytes is not None and current != str(max_input_bytes):
        subprocess.run(
            ["git", "-C", str(path), "config", "receive.maxInputSize", str(max_input_bytes)],
            check=True,
        )
    hook = path / "hooks" / "pre-receive"
    text = _HOOK.format(python=shlex.quote(sys.executable))
    if not hook.exists() or hook.read_text() != text:
        hook.write_text(text)
        hook.chmod(0o755)
    return path
