"""``kiln releases``, ``releases:info vN``: an app's numbered history."""

from __future__ import annotations

import click

from kiln.cli.options import app_option, json_option, resolve_app, when
from kiln.cli.output import console, emit_json, print_table, success
from kiln.client import ApiClient, app_path
from kiln.errors import InvalidInput
from kiln.models import ReleaseInfo, RollbackRequest


@click.command("releases")
@app_option
@json_option
@click.option("-n", "--num", default=15, show_default=True, help="How many releases to show.")
def releases(app: str | None, as_json: bool, num: int) -> None:
    """List an app's releases, newest first."""
    name = resolve_app(app)
    found = ApiClient.from_environment().get(app_path(name, "releases"), list[ReleaseInfo])[:num]
    if as_json:
        emit_json(found)
        return
    rows = [
        (
            f"v{r.version}",
            r.description,
            r.status,
            (r.commit or "")[:7],
            r.actor,
            when(r.created_at),
        )
        for r in found
    ]
    print_table(
        ("VERSION", "DESCRIPTION", "STATUS", "COMMIT", "BY", "CREATED"), rows, "No releases."
    )


@click.command("releases:info")
@click.argument("version")
@app_option
@json_option
def releases_info(version: str, app: str | None, as_json: bool) -> None:
    """Show one release (VERSION like v3 or 3)."""
    number = parse_version(version)
    name = resolve_app(app)
    info = ApiClient.from_environment().get(app_path(name, "releases", number), ReleaseInfo)
    if as_json:
        emit_json(info)
        return
    out = console()
    out.print(f"=== {name} release v{info.version}")
    out.print(f"Description: {info.description}")
    out.print(f"Status:      {info.status}")
    out.print(f"By:          {info.actor}")
    out.print(f"Created:     {when(info.created_at)}")
    out.print(f"Config vars: {', '.join(info.config_keys) or '(none)'}")
    if info.artifact:
        out.print(f"Runs:        {info.artifact.kind} {info.artifact.reference}", highlight=False)
    if info.commit:
        out.print(f"Commit:      {info.commit}")
    if info.status_message:
        out.print(f"Why:         {info.status_message}", markup=False, highlight=False)


def parse_version(text: str) -> int:
    number = text.removeprefix("v")
    if not number.isdigit():
        raise InvalidInput(f"{text!r} is not a release version; e.g. v3", code="bad_version")
    return int(number)


@click.command("rollback")
@click.argument("version", required=False)
@app_option
def rollback(version: str | None, app: str | None) -> None:
    """Run an earlier release's artifact and config again, as a new release (default: the last
    good one before the current)."""
    name = resolve_app(app)
    body = RollbackRequest(version=parse_version(version) if version else None)
    release = ApiClient.from_environment().post(
        app_path(name, "releases", "rollback"), ReleaseInfo, body.model_dump()
    )
    success(f"{release.description}: release v{release.version} of {name}.", f"kiln ps -a {name}")


COMMANDS = [releases, releases_info, rollback]
