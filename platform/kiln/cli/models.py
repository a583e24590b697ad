"""``kiln models`` and ``kiln models:prune``: the model cache."""

from __future__ import annotations

from pathlib import Path

import click

from kiln.cli.options import json_option
from kiln.cli.output import console, emit_json, print_table, success
from kiln.client import MODELS, ApiClient, path
from kiln.models import CachedModel, GcReport


@click.command("models")
@json_option
def models(as_json: bool) -> None:
    """List cached models, their size, and which apps use them."""
    found = ApiClient.from_environment().get(MODELS, list[CachedModel])
    if as_json:
        emit_json(found)
        return
    rows = [
        (
            m.repo_id,
            f"{m.size / 2**20:.1f} MiB",
            ", ".join(m.revisions),
            ", ".join(m.used_by) or "-",
        )
        for m in found
    ]
    print_table(("MODEL", "SIZE", "REVISIONS", "USED BY"), rows, "The model cache is empty.")


@click.command("models:prune")
@click.option("--dry-run", is_flag=True, help="Only say what would go, and what stays.")
@json_option
def models_prune(dry_run: bool, as_json: bool) -> None:
    """Remove cached models no kept release serves; say which stay and why."""
    report = ApiClient.from_environment().post(
        path("models", "prune") + ("?dry_run=true" if dry_run else ""), GcReport
    )
    if as_json:
        emit_json(report)
        return
    for repo, why in sorted(report.kept_models.items()):
        console().print(f"Kept {repo}: needed by {', '.join(why)}")
    names = ", ".join(Path(i.ref).name.removeprefix("models--").replace("--", "/")
                      for i in report.items) or "nothing"  # fmt: skip
    verb = "Would remove" if dry_run else "Removed"
    success(f"{verb} {names} ({report.freed / 2**20:.1f} MiB).", "kiln models")


COMMANDS = [models, models_prune]
