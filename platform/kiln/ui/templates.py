"""The dashboard's pages: Jinja2 templates rendered on the server (autoescaped), their filters,
and the headers every page carries (no framing, no inline script, nothing cached)."""

from __future__ import annotations

__all__ = ["SECURITY_HEADERS", "STATIC", "page", "render"]

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).parent
STATIC = HERE / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _ago(when: datetime | float | None) -> str:
    if when is None:
        return "-"
    stamp = when.timestamp() if isinstance(when, datetime) else when
    seconds = max(0, int(datetime.now(UTC).timestamp() - stamp))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _size(count: float | None) -> str:
    if count is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _mask(value: str) -> str:
    """A config value as the dashboard shows it: never whole."""
    return "•" * 8 if len(value) < 12 else value[:2] + "•" * 8 + value[-2:]


_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(ago=_ago, size=_size, ms=_ms, mask=_mask)


def render(name: str, context: dict[str, Any]) -> str:
    return _env.get_template(name).render(**context)


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """A whole page (or a fragment, for htmx), with the security headers."""
    return HTMLResponse(
        render(name, {"request": request, **context}), status_code=status,
        headers=SECURITY_HEADERS,
    )  # fmt: skip
