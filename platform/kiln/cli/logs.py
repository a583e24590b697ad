"""``kiln logs [--tail] [-n N] [--source build|release|dyno|router|usage|metrics]``."""

from __future__ import annotations

import time

import click

from kiln.cli.options import app_option, resolve_app
from kiln.client import ApiClient, app_path
from kiln.models import LogRecord, LogSource


@click.command("logs")
@app_option
@click.option("-t", "--tail", is_flag=True, help="Keep printing new lines until interrupted.")
@click.option("-n", "--num", default=100, show_default=True, help="How many recent lines.")
@click.option(
    "-s",
    "--source",
    type=click.Choice([s.value for s in LogSource]),
    help="Only one source.",
)
def logs(app: str | None, tail: bool, num: int, source: str | None) -> None:
    """Show an app's logs: builds, releases, dyno output and requests, merged by time."""
    name = resolve_app(app)
    params: dict[str, str] = {"n": str(num)}
    if source:
        params["source"] = source
    if tail:
        params["follow"] = "true"
    try:
        for raw in ApiClient.from_environment().stream_lines(app_path(name, "logs"), **params):
            if raw.strip():
                click.echo(format_record(LogRecord.model_validate_json(raw)))
    except KeyboardInterrupt:
        pass


COMMANDS = [logs]


def format_record(record: LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.ts))
    where = f"{record.process}@{record.node}" if record.node else record.process
    return f"{stamp}.{int(record.ts % 1 * 1000):03d} {record.source}[{where}]: {record.line}"
