"""``kiln deploy [DIR]``: pack the app (honouring .kilnignore/.dockerignore), upload, stream the build."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from kiln.build.source import pack
from kiln.cli.client import ApiClient
from kiln.cli.options import app_option, resolve_app
from kiln.cli.output import console
from kiln.errors import KilnError
from kiln.models import AppInfo, BuildEvent, BuildStatus, PlatformStatus, ReleaseInfo, ReleaseStatus


@click.command("deploy")
@click.argument("directory", default=".", type=click.Path(path_type=Path, file_okay=False))
@app_option
@click.option(
    "--artifact", type=click.Choice(["image", "slug"]),
    help="Build an OCI image or a slug  [default: image where a container engine runs]",
)  # fmt: skip
def deploy(directory: Path, app: str | None, artifact: str | None) -> None:
    """Build DIR (default: here), release it, and wait until it is live on its URL."""
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
        params = {"artifact": artifact} if artifact else {}
        for raw in ApiClient.from_environment().upload_lines(
            f"/apps/{name}/builds", archive, "application/gzip", **params
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
    if result.release is not None:
        _await_release(name, result.release)


def _await_release(name: str, version: int) -> None:
    """Follow the release until it is live (print its URL) or has failed (say why, exit 1)."""
    client = ApiClient.from_environment()
    out = console()
    if not client.get("/status", PlatformStatus).run:
        out.print(f"-----> v{version} recorded; this platform runs no apps (kiln up --no-run)")
        return
    out.print(f"-----> Launching v{version}", highlight=False)
    started = time.monotonic()
    while True:
        release = client.get(f"/apps/{name}/releases/{version}", ReleaseInfo)
        if release.status is ReleaseStatus.SUCCEEDED:
            url = client.get(f"/apps/{name}", AppInfo).url
            out.print(
                f"-----> v{version} is live in {time.monotonic() - started:.1f}s: {url}",
                highlight=False,
            )
            out.print(
                f"[dim]Next: curl {url}   |   kiln logs -a {name} --tail[/dim]", highlight=False
            )
            return
        if release.status is ReleaseStatus.FAILED:
            out.print(
                f" !     v{version} failed to start; the previous release keeps serving.",
                markup=False,
            )
            for line in (release.status_message or "").splitlines():
                out.print(f" !     {line}", markup=False, highlight=False)
            raise KilnError(
                f"release v{version} of {name} did not start (see above; kiln logs -a {name})",
                code="release_failed",
            )
        time.sleep(0.5)


COMMANDS = [deploy]
