"""``kiln gc``: remove what no kept release needs any more."""

from __future__ import annotations

import click

from kiln.cli.options import json_option
from kiln.cli.output import emit_json, print_table, success
from kiln.client import ApiClient, path
from kiln.models import GcReport


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Only list what would go, and how much.")
@json_option
def gc(dry_run: bool, as_json: bool) -> None:
    """Remove old slugs, virtualenvs and images (each app keeps its last KILN_KEEP_RELEASES
    releases'), unused models, destroyed apps' leftovers and stopped builds' scratch."""
    report = ApiClient.from_environment().post(path("gc") + ("?dry_run=true" if dry_run else ""),
                                               GcReport)  # fmt: skip
    if as_json:
        emit_json(report)
        return
    rows = [(i.kind, i.app or "-", f"{i.size / 2**20:.1f} MiB", i.ref, i.why) for i in report.items]
    print_table(("KIND", "APP", "SIZE", "WHAT", "WHY"), rows, "Nothing to collect.")
    verb = "Would free" if dry_run else "Freed"
    success(f"{verb} {report.freed / 2**20:.1f} MiB in {len(report.items)} item(s).",
            "kiln gc" if dry_run else "kiln apps")  # fmt: skip


COMMANDS = [gc]
