"""``kiln canary``, ``canary:promote``, ``canary:abort``: a new release on a share of replicas."""

from __future__ import annotations

import click

from kiln.cli.options import app_option, json_option, resolve_app
from kiln.cli.output import console, emit_json, print_table, success
from kiln.client import ApiClient, app_path
from kiln.models import CanaryInfo, ReleaseInfo


@click.command("canary")
@app_option
@json_option
def canary(app: str | None, as_json: bool) -> None:
    """Show the app's canary beside the release before it: requests, 5xx, p95."""
    name = resolve_app(app)
    info = ApiClient.from_environment().get(app_path(name, "canary"), CanaryInfo)
    if as_json:
        emit_json(info)
        return
    rows = []
    for role, figures in (("previous", info.stable), ("canary", info.canary)):
        p95 = f"{figures.p95_ms:.0f} ms" if figures.p95_ms is not None else "-"
        rows.append((f"v{figures.release}", role, figures.requests,
                     f"{figures.error_rate:.1f}%", p95))  # fmt: skip
    print_table(("RELEASE", "ROLE", "REQUESTS", "5XX", "P95"), rows, "")
    console().print(f"Canary on {info.share}% of the replicas ({info.status}): {info.judgement}")


@click.command("canary:promote")
@app_option
def canary_promote(app: str | None) -> None:
    """Roll the canary out to every replica."""
    name = resolve_app(app)
    release = ApiClient.from_environment().post(
        app_path(name, "canary", "promote"), ReleaseInfo, {}
    )
    success(f"Promoted v{release.version}: it rolls out to every replica.", f"kiln ps -a {name}")


@click.command("canary:abort")
@app_option
def canary_abort(app: str | None) -> None:
    """Send every replica back to the release before the canary."""
    name = resolve_app(app)
    release = ApiClient.from_environment().post(app_path(name, "canary", "abort"), ReleaseInfo, {})
    success(
        f"Aborted the canary v{release.version}: every replica runs the previous release.",
        f"kiln releases -a {name}",
    )


COMMANDS = [canary, canary_promote, canary_abort]
