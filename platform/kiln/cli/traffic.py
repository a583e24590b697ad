"""``kiln metrics``: an app's requests over a window (rate, status classes, latency
percentiles, per release), from the lines its routers logged."""

from __future__ import annotations

import click

from kiln.cli.options import app_option, json_option, resolve_app
from kiln.cli.output import console, emit_json, print_table
from kiln.client import ApiClient, app_path
from kiln.manifest.units import parse_duration
from kiln.models import RequestFigures, RequestSummary


def _ms(value: float | None) -> str:
    return f"{value:.0f} ms" if value is not None else "-"


def _row(label: str, figures: RequestFigures) -> tuple[object, ...]:
    status = figures.status
    return (label, figures.requests, f"{figures.per_s:.2f}",
            *(status.get(k, 0) for k in ("2xx", "4xx", "5xx")),
            _ms(figures.p50_ms), _ms(figures.p95_ms), _ms(figures.p99_ms),
            _ms(figures.first_chunk_p50_ms), figures.held, figures.cold_starts)  # fmt: skip


@click.command("metrics")
@app_option
@click.option("--since", default="1h", show_default=True, help="The window: 90s, 10m, 1h, 7d.")
@json_option
def metrics(app: str | None, since: str, as_json: bool) -> None:
    """Show an app's requests: req/s, 2xx/4xx/5xx, p50/p95/p99 latency, the median time to a
    stream's first event (an LLM's first token), requests held for a starting dyno, and replica
    (cold) starts, per release."""
    name = resolve_app(app)
    window = parse_duration(since, "--since")
    summary = ApiClient.from_environment().get(
        app_path(name, "metrics"), RequestSummary, since_s=window
    )
    if as_json:
        emit_json(summary)
        return
    console().print(f"=== {name}: the last {since}, {summary.replicas} replica(s) running",
                    highlight=False)  # fmt: skip
    rows = [_row("all", summary.total)] + [
        _row(f"v{f.release}" if f.release is not None else "-", f) for f in summary.releases
    ]
    heads = ("RELEASE", "REQUESTS", "REQ/S", "2XX", "4XX", "5XX", "P50", "P95", "P99",
             "FIRST EVENT", "HELD", "COLD STARTS")  # fmt: skip
    active = summary.total.requests or summary.total.cold_starts
    print_table(heads, rows if active else [], f"No requests in the last {since}.")


COMMANDS = [metrics]
