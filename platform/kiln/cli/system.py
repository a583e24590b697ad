"""``kiln up``, ``kiln down``, ``kiln status``: running the platform on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kiln.cli.client import ApiClient
from kiln.cli.options import json_option
from kiln.cli.output import console, emit_json, success
from kiln.control import process
from kiln.credentials import home_dir
from kiln.models import PlatformStatus
from kiln.settings import Settings


def _settings(home: Path | None, api_host: str | None, api_port: int | None) -> Settings:
    given: dict[str, Any] = {"home": home, "api_host": api_host, "api_port": api_port}
    return Settings(**{k: v for k, v in given.items() if v is not None})


@click.command("up")
@click.option("--home", type=click.Path(path_type=Path), help="State directory (KILN_HOME).")
@click.option("--api-host", help="Interface the API binds  [default: 127.0.0.1]")
@click.option("--api-port", type=int, help="Port of the API  [default: 7100]")
@click.option("-d", "--detach", is_flag=True, help="Run in the background; return once it answers.")
def up(home: Path | None, api_host: str | None, api_port: int | None, detach: bool) -> None:
    """Start the platform (in the foreground unless --detach)."""
    settings = _settings(home, api_host, api_port)
    if not detach:
        from kiln.control.server import serve  # the server's imports are slow; only `up` needs them

        serve(settings)
        return
    pid = process.start_detached(settings)
    success(
        f"Kiln is up on {settings.api_url} (pid {pid}; log: {process.log_path(settings.home)}).",
        "kiln apps:create NAME",
    )


@click.command("down")
@click.option("--home", type=click.Path(path_type=Path), help="State directory (KILN_HOME).")
def down(home: Path | None) -> None:
    """Stop the platform that kiln up started."""
    pid = process.stop(home or home_dir())
    success(f"Stopped Kiln (pid {pid}).", "kiln up")


@click.command("status")
@json_option
def status(as_json: bool) -> None:
    """Show the platform's API, version and store."""
    client = ApiClient.from_environment()
    info = client.get("/status", PlatformStatus)
    if as_json:
        emit_json(info)
        return
    out = console()
    out.print(f"API:     {client.base_url}")
    out.print(f"Version: {info.version}")
    out.print(f"Store:   {info.store}")
    out.print(f"Apps:    {info.apps}")


COMMANDS = [up, down, status]
