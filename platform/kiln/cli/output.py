"""How the CLI prints: rich tables for people, ``--json`` for scripts, errors on stderr."""

from __future__ import annotations

__all__ = ["console", "emit_json", "err_console", "print_table", "success"]

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter
from rich.console import Console
from rich.table import Table


def _console(stderr: bool) -> Console:
    probe = Console(stderr=stderr)
    # Pipes and test runners get a wide console so tables never truncate values.
    return Console(stderr=stderr, highlight=False, width=None if probe.is_terminal else 200)


def console() -> Console:
    return _console(stderr=False)


def err_console() -> Console:
    return _console(stderr=True)


def emit_json(data: Any) -> None:
    """Print models (or lists of them) as JSON; this is the ``--json`` output of every listing."""
    plain = TypeAdapter(Any).dump_python(data, mode="json")
    if isinstance(data, BaseModel):
        plain = data.model_dump(mode="json")
    elif isinstance(data, list):
        plain = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    print(json.dumps(plain, indent=2))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str) -> None:
    out = console()
    if not rows:
        out.print(empty)
        return
    table = Table(*headers, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    out.print(table)


def success(message: str, next_step: str | None = None) -> None:
    out = console()
    out.print(message)
    if next_step:
        out.print(f"[dim]Next: {next_step}[/dim]")
