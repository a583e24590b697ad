"""Options every noun shares: ``-a/--app`` (or the app named by ./kiln.toml) and ``--json``."""

from __future__ import annotations

__all__ = ["app_option", "json_option", "resolve_app", "when"]

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from kiln import names
from kiln.errors import InvalidInput
from kiln.manifest import load_manifest

F = TypeVar("F", bound=Callable[..., Any])

app_option: Callable[[F], F] = click.option(
    "-a", "--app", "app", metavar="APP", help="The app (default: the name in ./kiln.toml)."
)
json_option: Callable[[F], F] = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts."
)


def resolve_app(app: str | None, directory: Path | None = None) -> str:
    """The app a command is about: ``-a APP``, else ``name`` in the directory's kiln.toml."""
    if app:
        return names.app_name(app)
    manifest = load_manifest(directory or Path.cwd())
    if manifest is not None and manifest.name:
        return manifest.name
    from_remote = _app_of_git_remote(directory)
    if from_remote:
        return from_remote
    raise InvalidInput(
        "no app given: pass -a APP, or run inside an app directory whose kiln.toml sets "
        'name = "APP" (or a git repository with a kiln remote: kiln git:remote -a APP)',
        code="no_app",
    )


def _app_of_git_remote(directory: Path | None) -> str | None:
    """The app the ``kiln`` git remote points at, as Heroku reads its ``heroku`` remote."""
    import re
    import subprocess

    try:
        url = subprocess.run(
            ["git", "remote", "get-url", "kiln"], cwd=directory, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return None
    match = re.search(r"/git/([a-z0-9-]+)\.git$", url)
    return match.group(1) if match else None


def when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
