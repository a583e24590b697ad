"""``kiln up``, ``kiln down``, ``kiln status``: running the platform on this machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from kiln.cli.options import json_option
from kiln.cli.output import console, emit_json, success
from kiln.client import STATUS, ApiClient
from kiln.control import process
from kiln.credentials import home_dir
from kiln.errors import NotFound
from kiln.models import PlatformStatus
from kiln.settings import Settings


def _settings(**given: Any) -> Settings:
    return Settings(**{k: v for k, v in given.items() if v is not None})


@click.command("up")
@click.option("--home", type=click.Path(path_type=Path), help="State directory (KILN_HOME).")
@click.option("--api-host", help="Interface the API binds  [default: 127.0.0.1]")
@click.option("--api-port", type=int, help="Port of the API  [default: 7100]")
@click.option("--http-port", type=int, help="Port apps are served on  [default: 8000]")
@click.option("--ray-address", help="Run on this existing Ray cluster (GCS host:port).")
@click.option(
    "--cluster",
    is_flag=False,
    flag_value="auto",
    default=None,
    metavar="[ADDRESS]",
    help="Start a head other machines join (kiln nodes:join): Ray on ADDRESS  [default: this "
    "machine's address on its default route]",
)
@click.option(
    "--no-run", is_flag=True, help="Control plane only: build and release, serve nothing."
)
@click.option("-d", "--detach", is_flag=True, help="Run in the background; return once it answers.")
def up(
    home: Path | None, api_host: str | None, api_port: int | None, http_port: int | None,
    ray_address: str | None, cluster: str | None, no_run: bool, detach: bool,
) -> None:  # fmt: skip
    """Start the platform: Ray Serve for the apps, and the control plane (foreground unless -d)."""
    settings = _settings(
        home=home, api_host=api_host, api_port=api_port, http_port=http_port,
        ray_address=ray_address or os.environ.get("RAY_ADDRESS"), run=False if no_run else None,
        cluster_address=_cluster_address(cluster),
    )  # fmt: skip
    if not detach:
        from kiln.control.server import serve  # the server's imports are slow; only `up` needs them

        serve(settings)
        return
    pid = process.start_detached(settings, say=click.echo)
    success(
        f"Kiln is up: API {settings.api_url}, apps at {settings.apps_url}/<app>/ "
        f"(pid {pid}; log: {process.log_path(settings.home)}).",
        "kiln apps:create NAME",
    )


def _cluster_address(given: str | None) -> str | None:
    if given != "auto":
        return given
    from kiln.run.nodes import local_address

    return local_address("192.0.2.1")  # the default route's source address; nothing is sent


@click.command("down")
@click.option("--home", type=click.Path(path_type=Path), help="State directory (KILN_HOME).")
def down(home: Path | None) -> None:
    """Stop the platform that kiln up started: the control plane, then Ray and every dyno."""
    from kiln.run.cluster import LocalRay

    settings = _settings(home=home or home_dir())
    try:
        pid: int | None = process.stop(settings.home)
    except NotFound:
        pid = None
    ray = LocalRay(settings).stop()
    from kiln.addons.postgres import EmbeddedPostgres

    if EmbeddedPostgres(settings).stop():
        success("Stopped the vector stores' PostgreSQL.")
    from kiln.builds.registry import EmbeddedRegistry

    if EmbeddedRegistry(settings).stop():
        success("Stopped the image registry.")
    if pid is None and ray is None:
        raise NotFound(
            f"Kiln is not running from {settings.home}; start it with kiln up", code="not_running"
        )
    if pid is not None:
        success(f"Stopped the control plane (pid {pid}).")
    if ray is not None:
        success(f"Stopped Ray and its apps (pid {ray}).")
    console().print("[dim]Next: kiln up[/dim]")


@click.command("status")
@json_option
def status(as_json: bool) -> None:
    """Show the platform's API, version and store."""
    client = ApiClient.from_environment()
    info = client.get(STATUS, PlatformStatus)
    if as_json:
        emit_json(info)
        return
    out = console()
    out.print(f"API:     {client.base_url}")
    out.print(f"Version: {info.version}")
    out.print(f"Store:   {info.store}")
    out.print(f"Apps:    {info.apps}")
    out.print(f"Serving: {info.apps_url + '/<app>/' if info.run else 'off (kiln up --no-run)'}")
    out.print(f"Isolation: {info.isolation}")


COMMANDS = [up, down, status]
