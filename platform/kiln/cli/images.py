"""``kiln images:bootstrap``: make the local base image on this machine's container engine."""

from __future__ import annotations

import click

from kiln.cli.output import success
from kiln.errors import Unavailable
from kiln.settings import Settings


@click.command("images:bootstrap")
@click.option("--mirror", help="Debian mirror  [default: this host's apt mirror]")
@click.option("--force", is_flag=True, help="Rebuild kiln/base:bookworm even if it exists.")
def images_bootstrap(mirror: str | None, force: bool) -> None:
    """Build the base image kiln/base:bookworm locally (no registry needed; needs root)."""
    # The engine's SDK is slow to import; only this command needs it.
    from kiln.builds.bootstrap import bootstrap_base_image, debian_mirror
    from kiln.builds.image import LOCAL_BASE
    from kiln.engine import connect_engine

    settings = Settings()
    engine = connect_engine(settings.resolved_docker_host)
    if engine is None:
        raise Unavailable(
            "no container engine answers (DOCKER_HOST, or the default Docker socket); start "
            "dockerd or podman system service first",
            code="no_engine",
        )
    if engine.has_image(LOCAL_BASE) and not force:
        success(f"{LOCAL_BASE} is already on {engine.name}; --force rebuilds it.", "kiln deploy")
        return
    bootstrap_base_image(engine, click.echo, mirror=mirror or debian_mirror())
    success(f"Builds on {engine.name} can now use {LOCAL_BASE}.", "kiln deploy")


COMMANDS = [images_bootstrap]
