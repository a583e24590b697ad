"""``kiln deploy [DIR]``: pack the app (honouring .kilnignore/.dockerignore), upload, stream the build."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from kiln.build.source import pack
from kiln.cli.client import ApiClient
from kiln.cli.options import app_option, resolve_app
from kiln.cli.output import console
from kiln.errors import KilnError
from kiln.models import BuildEvent, BuildStatus


@click.command("deploy")
@click.argument("directory", default=".", type=click.Path(path_type=Path, file_okay=False))
@app_option
def deploy(directory: Path, app: str | None) -> None:
    """Build DIR (default: here) and release it."""
    name = resolve_app(app, directory)
    out = console()
    with tempfile.TemporaryFile() as archive:
        files, size = pack(directory, archive)
        compressed = archive.tell()
        archive.seek(0)
        out.print(
            f"-----> Uploading {directory.resolve().name} to {name}: {files} files, "
            f"{size / 2**20:.1f} MiB ({compressed / 2**20:.1f} MiB compressed)",
            highlight=False,
        )
        result = None
        for raw in ApiClient.from_environment().upload_lines(
            f"/apps/{name}/builds", archive, "application/gzip"
        ):
            if not raw.strip():
                continue
            event = BuildEvent.model_validate_json(raw)
            if event.line is not None:
                out.print(event.line, markup=False, highlight=False)
            elif event.error is not None:
                raise KilnError(event.error.message, code=event.error.code)
            elif event.build is not None:
                result = event.build
    if result is None:
        raise KilnError(
            f"the build stream ended without a result; see kiln builds -a {name}", code="no_result"
        )
    if result.status != BuildStatus.SUCCEEDED:
        raise KilnError(
            f"build {result.id} failed: {result.error}. Fix it and deploy again "
            f"(full log: kiln builds:log {result.id} -a {name})",
            code="build_failed",
        )
    out.print(f"[dim]Next: kiln releases -a {name}[/dim]")


COMMANDS = [deploy]
