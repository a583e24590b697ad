"""``kiln deploy [DIR]``: pack the app (honouring .kilnignore/.dockerignore), upload, stream the build."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import click

from kiln.builds.source import pack
from kiln.cli.client import ApiClient
from kiln.cli.options import app_option, resolve_app
from kiln.cli.output import console
from kiln.errors import KilnError
from kiln.models import (
    AppInfo,
    BuildEvent,
    BuildStatus,
    PlatformStatus,
    ProcessList,
    ReleaseInfo,
    ReleaseStatus,
)

Say = Callable[[str], None]


@click.command("deploy")
@click.argument("directory", default=".", type=click.Path(path_type=Path, file_okay=False))
@app_option
@click.option(
    "--artifact", type=click.Choice(["image", "slug"]),
    help="Build an OCI image or a slug  [default: image where a container engine runs]",
)  # fmt: skip
@click.option(
    "--canary", type=click.IntRange(1, 99), metavar="PERCENT",
    help="Run the release on this percent of the replicas first (at least one); the rest keep "
    "the previous release. kiln canary shows how it does.",
)  # fmt: skip
@click.option(
    "--wait",
    "wait",
    type=float,
    default=900,
    show_default=True,
    help="Seconds to wait for the release to go live.",
)
def deploy(
    directory: Path, app: str | None, artifact: str | None, canary: int | None, wait: float
) -> None:
    """Build DIR (default: here), release it, and wait until it is live on its URL."""
    name = resolve_app(app, directory)
    out = console()

    def say(line: str) -> None:
        out.print(line, markup=False, highlight=False)

    with tempfile.TemporaryFile() as archive:
        files, size = pack(directory, archive)
        compressed = archive.tell()
        archive.seek(0)
        say(
            f"-----> Uploading {directory.resolve().name} to {name}: {files} files, "
            f"{size / 2**20:.1f} MiB ({compressed / 2**20:.1f} MiB compressed)"
        )
        params = {"artifact": artifact} if artifact else {}
        if canary:
            params["canary"] = str(canary)
        release = build_and_follow(ApiClient.from_environment(), name, archive, say, **params)
    await_release(ApiClient.from_environment(), name, release, wait, say)


def build_and_follow(
    client: ApiClient, name: str, archive: IO[bytes], say: Say, **params: str
) -> int | None:
    """Upload a source archive, print its build log as it streams; the release it made, or
    KilnError naming the failure."""
    result = None
    for raw in client.upload_lines(f"/apps/{name}/builds", archive, "application/gzip", **params):
        if not raw.strip():
            continue
        event = BuildEvent.model_validate_json(raw)
        if event.line is not None:
            say(event.line)
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
    return result.release


def await_release(
    client: ApiClient, name: str, version: int | None, wait_s: float, say: Say
) -> None:
    """Follow the release until it is live (print its URL) or has failed (say why, raise);
    while it waits (for GPUs, say), say why every so often."""
    if version is None:
        return
    if not client.get("/status", PlatformStatus).run:
        say(f"-----> v{version} recorded; this platform runs no apps (kiln up --no-run)")
        return
    say(f"-----> Launching v{version}")
    started = time.monotonic()
    said = started
    while True:
        if time.monotonic() - said > 20:
            said = time.monotonic()
            waiting = client.get(f"/apps/{name}/ps", ProcessList).message.splitlines()
            say(
                f"       still starting after {said - started:.0f}s"
                + (f": {waiting[0][:200]}" if waiting else "")
            )
        if time.monotonic() - started > wait_s:
            raise KilnError(
                f"v{version} of {name} is not live after {wait_s:.0f}s; it may still start (the "
                f"previous release keeps serving meanwhile): see kiln ps -a {name}",
                code="release_pending",
            )
        release = client.get(f"/apps/{name}/releases/{version}", ReleaseInfo)
        if release.status is ReleaseStatus.CANARY:
            say(f"-----> v{version} runs as a canary on {release.canary}% of the replicas after "
                f"{time.monotonic() - started:.1f}s; the rest serve the previous release")  # fmt: skip
            say(f"       Next: kiln canary -a {name}   |   kiln canary:promote -a {name}")
            return
        if release.status is ReleaseStatus.SUCCEEDED:
            url = client.get(f"/apps/{name}", AppInfo).url
            say(f"-----> v{version} is live in {time.monotonic() - started:.1f}s: {url}")
            say(f"       Next: curl {url}   |   kiln logs -a {name} --tail")
            return
        if release.status is ReleaseStatus.FAILED:
            say(f" !     v{version} failed to start; the previous release keeps serving.")
            for line in (release.status_message or "").splitlines():
                say(f" !     {line}")
            raise KilnError(
                f"release v{version} of {name} did not start (see above; kiln logs -a {name})",
                code="release_failed",
            )
        time.sleep(0.5)


COMMANDS = [deploy]
