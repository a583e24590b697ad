"""``kiln builds``, ``builds:info ID``, ``builds:log ID``."""

from __future__ import annotations

import click

from kiln.cli.options import app_option, json_option, resolve_app, when
from kiln.cli.output import console, emit_json, print_table
from kiln.client import ApiClient, app_path
from kiln.models import BuildInfo


@click.command("builds")
@app_option
@json_option
def builds(app: str | None, as_json: bool) -> None:
    """List an app's builds, newest first."""
    name = resolve_app(app)
    found = ApiClient.from_environment().get(app_path(name, "builds"), list[BuildInfo])
    if as_json:
        emit_json(found)
        return
    rows = [
        (b.id, b.status, b.runtime or "-", b.artifact.kind if b.artifact else "-",
         f"v{b.release}" if b.release else "-", f"{b.duration_s:.1f}s" if b.duration_s else "-",
         when(b.created_at), b.error or "")
        for b in found
    ]  # fmt: skip
    print_table(
        ("ID", "STATUS", "RUNTIME", "ARTIFACT", "RELEASE", "TOOK", "STARTED", "ERROR"),
        rows,
        f"No builds yet. Deploy one: kiln deploy -a {name}",
    )


@click.command("builds:info")
@click.argument("build_id", type=int, metavar="ID")
@app_option
@json_option
def builds_info(build_id: int, app: str | None, as_json: bool) -> None:
    """Show one build."""
    name = resolve_app(app)
    info = ApiClient.from_environment().get(app_path(name, "builds", build_id), BuildInfo)
    if as_json:
        emit_json(info)
        return
    out = console()
    out.print(f"=== {name} build {info.id}", highlight=False)
    out.print(f"Status:   {info.status}")
    out.print(f"Runtime:  {info.runtime or '-'}")
    if info.artifact:
        out.print(f"Artifact: {info.artifact.kind} {info.artifact.reference}", highlight=False)
    out.print(f"Source:   {info.source_digest or '-'}")
    out.print(f"Release:  {f'v{info.release}' if info.release else '-'}")
    out.print(f"Started:  {when(info.created_at)}  took {info.duration_s or 0:.1f}s")
    if info.error:
        out.print(f"Error:    {info.error}", markup=False)


@click.command("builds:log")
@click.argument("build_id", type=int, metavar="ID")
@app_option
def builds_log(build_id: int, app: str | None) -> None:
    """Print a build's whole log."""
    name = resolve_app(app)
    click.echo(
        ApiClient.from_environment().text(app_path(name, "builds", build_id, "log")), nl=False
    )


COMMANDS = [builds, builds_info, builds_log]
