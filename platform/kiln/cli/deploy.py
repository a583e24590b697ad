"""``kiln deploy [DIR]``: pack the app (honouring .kilnignore/.dockerignore), upload, stream the build."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from kiln.builds.source import pack
from kiln.cli.options import app_option, resolve_app
from kiln.cli.output import console
from kiln.client import ApiClient, await_release, build_and_follow
from kiln.models import ArtifactKind


@click.command("deploy")
@click.argument("directory", default=".", type=click.Path(path_type=Path, file_okay=False))
@app_option
@click.option(
    "--artifact", type=click.Choice([k.value for k in ArtifactKind]),
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


COMMANDS = [deploy]
