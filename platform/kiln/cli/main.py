"""The ``kiln`` command: one root group, one module per noun, one place that prints errors.

A ``KilnError`` prints as ``Error: <message>`` on stderr and exits 1, with no traceback unless
``--debug`` (or ``KILN_DEBUG=1``) is given.
"""

from __future__ import annotations

__all__ = ["cli", "main"]

import os
import traceback
from typing import Any

import click

from kiln import __version__
from kiln.cli import (
    addons,
    apps,
    builds,
    canary,
    config,
    deploy,
    gc,
    git,
    gpus,
    images,
    logs,
    manifest,
    models,
    nodes,
    ps,
    releases,
    system,
    tokens,
    traffic,
)
from kiln.cli.output import err_console
from kiln.errors import KilnError


class CliError(click.ClickException):
    exit_code = 1

    def __init__(self, message: str, debug_trace: str | None = None) -> None:
        super().__init__(message)
        self.debug_trace = debug_trace

    def show(self, file: Any = None) -> None:
        out = err_console()
        if self.debug_trace:
            out.print(self.debug_trace, markup=False, end="")
        out.print(f"[bold red]Error:[/bold red] {self.message}", soft_wrap=True)


class KilnGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug")) or os.environ.get("KILN_DEBUG") == "1"
        try:
            return super().invoke(ctx)
        except KilnError as exc:
            raise CliError(exc.message, traceback.format_exc() if debug else None) from exc
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise CliError(
                f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback, "
                "and please report it)",
                traceback.format_exc() if debug else None,
            ) from exc


@click.group(cls=KilnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kiln")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
def cli(debug: bool) -> None:
    """Kiln: git push (or kiln deploy) a model-serving app; it runs on Ray Serve, on a URL."""


for _module in (
    system, apps, deploy, canary, git, builds, ps, logs, config, releases, addons, tokens, gpus, nodes,
    models, images, manifest, gc, traffic,
):  # fmt: skip
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli(prog_name="kiln")
