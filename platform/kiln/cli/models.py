"""``kiln models`` and ``kiln models:prune``: the model cache."""

from __future__ import annotations

import click

from kiln.cli.options import json_option
from kiln.cli.output import emit_json, print_table, success
from kiln.client import MODELS, ApiClient, path
from kiln.models import CachedModel


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
def models_prune() -> None:
    """Remove cached models that no app's current release uses."""
    removed = ApiClient.from_environment().post(path("models", "prune"), list[CachedModel])
    freed = sum(m.size for m in removed)
    names = ", ".join(m.repo_id for m in removed) or "nothing"
    success(f"Removed {names} ({freed / 2**20:.1f} MiB freed).", "kiln models")


COMMANDS = [models, models_prune]
