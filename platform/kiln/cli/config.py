"""``kiln config``, ``config:get``, ``config:set``, ``config:unset``: an app's environment."""

from __future__ import annotations

import shlex

import click

from kiln.cli.options import app_option, json_option, resolve_app
from kiln.cli.output import console, emit_json, print_table, success
from kiln.client import ApiClient, app_path
from kiln.errors import InvalidInput, NotFound
from kiln.models import ConfigChange, ConfigUpdate


@click.command("config")
@app_option
@json_option
@click.option("-s", "--shell", is_flag=True, help="Print KEY=VALUE lines for a shell or .env file.")
def config(app: str | None, as_json: bool, shell: bool) -> None:
    """Show an app's config vars."""
    name = resolve_app(app)
    values = ApiClient.from_environment().get(app_path(name, "config"), dict[str, str])
    if as_json:
        emit_json(values)
    elif shell:
        for key, value in sorted(values.items()):
            click.echo(f"{key}={shlex.quote(value)}")
    else:
        print_table(
            ("KEY", "VALUE"),
            sorted(values.items()),
            f"{name} has no config vars. Set one: kiln config:set -a {name} KEY=VALUE",
        )


@click.command("config:get")
@click.argument("key")
@app_option
def config_get(key: str, app: str | None) -> None:
    """Print one config var's value."""
    name = resolve_app(app)
    values = ApiClient.from_environment().get(app_path(name, "config"), dict[str, str])
    if key not in values:
        raise NotFound(f"{name} has no config var {key}; see kiln config -a {name}", code="no_var")
    click.echo(values[key])


@click.command("config:set")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@app_option
def config_set(pairs: tuple[str, ...], app: str | None) -> None:
    """Set config vars; makes a new release."""
    changes: dict[str, str | None] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput(
                f"{pair!r} is not KEY=VALUE; e.g. kiln config:set HF_TOKEN=hf_xxx",
                code="bad_pair",
            )
        changes[key] = value
    _apply(resolve_app(app), changes, "Set")


@click.command("config:unset")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@app_option
def config_unset(keys: tuple[str, ...], app: str | None) -> None:
    """Remove config vars; makes a new release."""
    _apply(resolve_app(app), dict.fromkeys(keys), "Unset")


def _apply(name: str, changes: dict[str, str | None], verb: str) -> None:
    result = ApiClient.from_environment().patch(
        app_path(name, "config"), ConfigChange, ConfigUpdate(vars=changes).model_dump()
    )
    keys = ", ".join(changes)
    if not result.changed:
        console().print(
            f"No change: {keys} already as asked on {name} (still v{result.release.version})."
        )
        return
    success(
        f"{verb} {keys} on {name}: release v{result.release.version}.",
        f"kiln releases -a {name}",
    )


COMMANDS = [config, config_get, config_set, config_unset]
