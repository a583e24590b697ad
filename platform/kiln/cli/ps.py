"""``kiln ps``, ``kiln scale N``, ``kiln autoscale``: an app's replicas (dynos) and their counts."""

from __future__ import annotations

import click

from kiln.cli.options import app_option, json_option, resolve_app
from kiln.cli.output import console, emit_json, print_table, success
from kiln.client import ApiClient, app_path
from kiln.errors import InvalidInput
from kiln.models import Formation, LlmFigures, ProcessList, ReplicaGpu


def _describe(formation: Formation) -> str:
    if formation.fixed:
        return f"{formation.max_replicas} replica{'s' if formation.max_replicas != 1 else ''}"
    target = (
        f", target {formation.target_ongoing_requests:g} in flight"
        if formation.target_ongoing_requests
        else ""
    )
    return f"autoscaled {formation.min_replicas}..{formation.max_replicas}{target}"


def _gpus(gpus: list[ReplicaGpu]) -> str:
    """e.g. "H100 12.3/80.0 GiB 45%" per GPU."""
    gib = 1024**3
    return (
        ", ".join(
            f"{g.name.removeprefix('NVIDIA ').split(' ')[0]} "
            f"{g.memory_used / gib:.1f}/{g.memory_total / gib:.1f} GiB"
            + (f" {g.utilization}%" if g.utilization is not None else "")
            for g in gpus
        )
        or "-"
    )


def _engine(figures: LlmFigures | None) -> str:
    """e.g. "2 running, 0 queued, KV 12%, 140 tok/s, TTFT 35 ms"."""
    if figures is None:
        return "-"
    parts = [f"{figures.running} running", f"{figures.waiting} queued",
             f"KV {figures.kv_cache_percent:g}%"]  # fmt: skip
    if figures.tokens_per_s is not None:
        parts.append(f"{figures.tokens_per_s:g} tok/s")
    if figures.ttft_ms is not None:
        parts.append(f"TTFT {figures.ttft_ms:g} ms")
    return ", ".join(parts)


@click.command("ps")
@app_option
@json_option
def ps(app: str | None, as_json: bool) -> None:
    """Show an app's replicas: state, node, uptime; pending ones with the reason."""
    name = resolve_app(app)
    listing = ApiClient.from_environment().get(app_path(name, "ps"), ProcessList)
    if as_json:
        emit_json(listing)
        return
    out = console()
    release = f"v{listing.release}" if listing.release else "-"
    out.print(
        f"=== {name} {release}: {listing.status}, {_describe(listing.formation)}", highlight=False
    )
    out.print(f"URL: {listing.url}", highlight=False)
    with_gpus = any(r.gpus for r in listing.replicas)
    with_engine = any(r.engine for r in listing.replicas)
    rows: list[tuple[object, ...]] = [
        (f"dyno.{r.replica[:6]}", r.state, r.node or "-", r.pid or "-",
         f"{r.uptime_s:.0f}s" if r.uptime_s is not None else "-",
         *((_gpus(r.gpus),) if with_gpus else ()),
         *((_engine(r.engine),) if with_engine else ()))
        for r in listing.replicas
    ]  # fmt: skip
    headers = ("DYNO", "STATE", "NODE", "PID", "UP", *(("GPU",) if with_gpus else ()),
               *(("ENGINE",) if with_engine else ()))  # fmt: skip
    print_table(headers, rows, "No replicas run now (scaled to zero, or not deployed).")
    if listing.message:
        out.print(
            f"[yellow]{listing.message.splitlines()[0][:300]}[/yellow]",
            highlight=False,
            markup=True,
        )


@click.command("scale")
@click.argument("replicas", type=click.IntRange(0, 1000))
@app_option
def scale(replicas: int, app: str | None) -> None:
    """Run exactly REPLICAS replicas (0 stops every dyno; the app and releases stay)."""
    name = resolve_app(app)
    formation = Formation(min_replicas=replicas, max_replicas=replicas)
    ApiClient.from_environment().put(app_path(name, "formation"), Formation, formation.model_dump())
    success(f"Scaling {name} to {_describe(formation)}.", f"kiln ps -a {name}")


@click.command("autoscale")
@click.option(
    "--min",
    "low",
    type=click.IntRange(0, 1000),
    required=True,
    help="Fewest replicas (0: scale to zero).",
)
@click.option("--max", "high", type=click.IntRange(1, 1000), required=True, help="Most replicas.")
@click.option("--target", type=float, help="In-flight requests per replica to aim for.")
@app_option
def autoscale(low: int, high: int, target: float | None, app: str | None) -> None:
    """Autoscale between --min and --max replicas by requests in flight (Ray Serve)."""
    if high < low:
        raise InvalidInput(f"--max ({high}) must be >= --min ({low})", code="bad_formation")
    if target is not None and target <= 0:
        raise InvalidInput(f"--target must be more than 0; got {target:g}", code="bad_formation")
    name = resolve_app(app)
    formation = Formation(min_replicas=low, max_replicas=high, target_ongoing_requests=target)
    ApiClient.from_environment().put(app_path(name, "formation"), Formation, formation.model_dump())
    success(f"{name} now {_describe(formation)}.", f"kiln ps -a {name}")


COMMANDS = [ps, scale, autoscale]
