"""Reading ``kiln.toml``: TOML text -> ``Manifest``, or a ``ManifestError`` naming file, line, field.

>>> parse_manifest('name = "echo"\\n[scaling]\\nmax_replicas = 4\\n').scaling.max_replicas
4
"""

from __future__ import annotations

__all__ = ["MANIFEST_FILE", "find_manifest", "load_manifest", "parse_manifest"]

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from kiln.errors import ManifestError, ManifestProblem
from kiln.manifest.model import Manifest

MANIFEST_FILE = "kiln.toml"


def find_manifest(path: Path) -> Path | None:
    """The manifest file for ``path`` (an app directory or the file itself), if there is one."""
    candidate = path / MANIFEST_FILE if path.is_dir() else path
    return candidate if candidate.is_file() else None


def load_manifest(path: Path) -> Manifest | None:
    """Read and validate the manifest of an app directory; ``None`` when it has no kiln.toml."""
    file = find_manifest(path)
    if file is None:
        return None
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            [ManifestProblem(str(file), None, None, f"is not UTF-8 text ({exc.reason})")]
        ) from None
    return parse_manifest(text, file=str(file))


def parse_manifest(text: str, *, file: str = MANIFEST_FILE) -> Manifest:
    """Validate manifest text; every problem found is reported at once, each with its line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column \d+\)", message)
        line = int(match.group(1)) if match else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        raise ManifestError(
            [ManifestProblem(file, line, None, f"is not valid TOML: {message}")]
        ) from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        lines = _key_lines(text)
        problems = [_problem(error, file, lines) for error in exc.errors()]
        problems.sort(key=lambda p: (p.line is None, p.line or 0))
        raise ManifestError(problems) from None


def _problem(error: ErrorDetails, file: str, lines: dict[tuple[str, ...], int]) -> ManifestProblem:
    keys = tuple(str(part) for part in error["loc"] if not isinstance(part, int))
    field = _field_name(error["loc"])
    line = _best_line(keys, lines)
    if error["type"] == "extra_forbidden":
        return ManifestProblem(file, line, field, _unknown_key_message(keys))
    if error["type"] == "missing":
        return ManifestProblem(file, line, field, "is required")
    return ManifestProblem(file, line, field, f"got {_show(error['input'])}; {_reason(error)}")


def _field_name(loc: tuple[int | str, ...]) -> str:
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part != "[key]":
            name += f".{part}" if name else str(part)
    return name


def _reason(error: ErrorDetails) -> str:
    ctx = error.get("ctx") or {}
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}  # fmt: skip
    if error["type"] in bounds:
        limit = next(iter(ctx.values()), "?")
        return f"must be {bounds[error['type']]} {limit}"
    if error["type"] == "enum" and "expected" in ctx:
        return f"must be one of {ctx['expected']}"
    message = error["msg"].removeprefix("Value error, ")
    return message.replace("Input should be", "must be").replace("String should", "must")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_key_message(keys: tuple[str, ...]) -> str:
    allowed = _allowed_keys(keys[:-1])
    close = difflib.get_close_matches(keys[-1], allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; allowed here: {', '.join(allowed)}"


def _allowed_keys(parents: tuple[str, ...]) -> list[str]:
    model: type[BaseModel] = Manifest
    for key in parents:
        field = model.model_fields.get(key)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*="
)


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)", dotted)
    return tuple(next(p for p in group if p) if any(group) else "" for group in parts)


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each table and key path in the TOML text to the line (1-based) where it is written."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if match := _TABLE.match(line):
            table = _split_key(match.group(1))
            lines.setdefault(table, number)
        elif match := _KEY.match(line):
            lines.setdefault(table + _split_key(match.group(1)), number)
    return lines


def _best_line(keys: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> int | None:
    for length in range(len(keys), 0, -1):
        if keys[:length] in lines:
            return lines[keys[:length]]
    return None
