"""``kiln addons``, ``addons:create``, ``addons:info``, ``addons:destroy``; ``kiln keys``,
``keys:create``, ``keys:revoke`` (the api-keys add-on's keys)."""

from __future__ import annotations

import click

from kiln.cli.options import app_option, json_option, resolve_app, when
from kiln.cli.output import console, emit_json, print_table, success
from kiln.client import ApiClient, app_path
from kiln.errors import InvalidInput
from kiln.manifest import AddonKind
from kiln.manifest.units import parse_duration, parse_rate
from kiln.models import AddonCreate, AddonInfo, ApiKeyCreate, ApiKeyInfo, NewApiKey


@click.command("addons")
@app_option
@json_option
def addons(app: str | None, as_json: bool) -> None:
    """List an app's add-ons."""
    name = resolve_app(app)
    found = ApiClient.from_environment().get(app_path(name, "addons"), list[AddonInfo])
    if as_json:
        emit_json(found)
        return
    rows = [(a.name, a.kind, ", ".join(a.config_vars) or "-", when(a.created_at)) for a in found]
    print_table(("NAME", "KIND", "CONFIG VARS", "CREATED"), rows, f"{name} has no add-ons.")


@click.command("addons:create")
@click.argument("kind", type=click.Choice([k.value for k in AddonKind]))
@click.option("--as", "alias", metavar="NAME", help="Name on the app (default: the kind).")
@app_option
def addons_create(kind: str, alias: str | None, app: str | None) -> None:
    """Attach an add-on: provisions it and sets its config vars (a new release)."""
    name = resolve_app(app)
    info = ApiClient.from_environment().post(
        app_path(name, "addons"), AddonInfo, AddonCreate(kind=kind, name=alias).model_dump()
    )
    injected = f"; sets {', '.join(info.config_vars)}" if info.config_vars else ""
    next_step = f"kiln keys:create -a {name}" if kind == "api-keys" else f"kiln config -a {name}"
    success(f"Attached {info.kind} as {info.name} to {name}{injected}.", next_step)


@click.command("addons:info")
@click.argument("addon")
@app_option
@json_option
def addons_info(addon: str, app: str | None, as_json: bool) -> None:
    """Show one add-on."""
    name = resolve_app(app)
    info = ApiClient.from_environment().get(app_path(name, "addons", addon), AddonInfo)
    if as_json:
        emit_json(info)
        return
    out = console()
    out.print(f"=== {name} add-on {info.name}", highlight=False)
    out.print(f"Kind:        {info.kind}")
    out.print(f"Status:      {info.status}")
    out.print(f"Config vars: {', '.join(info.config_vars) or '(none)'}")
    out.print(f"Created:     {when(info.created_at)}")


@click.command("addons:destroy")
@click.argument("addon")
@app_option
@click.option("--confirm", metavar="APP", help="The app's name, to confirm.")
def addons_destroy(addon: str, app: str | None, confirm: str | None) -> None:
    """Detach an add-on and destroy what it provisioned (a vector store's data too)."""
    name = resolve_app(app)
    if confirm != name:
        raise InvalidInput(
            f"this destroys the add-on {addon} of {name} and what it holds; to proceed, run: "
            f"kiln addons:destroy {addon} -a {name} --confirm {name}",
            code="confirmation_required",
        )
    ApiClient.from_environment().delete(app_path(name, "addons", addon), AddonInfo)
    success(f"Destroyed {addon} of {name}.", f"kiln addons -a {name}")


@click.command("keys")
@app_option
@json_option
def keys(app: str | None, as_json: bool) -> None:
    """List the app's API keys (never the keys themselves), with their use."""
    name = resolve_app(app)
    found = ApiClient.from_environment().get(app_path(name, "keys"), list[ApiKeyInfo])
    if as_json:
        emit_json(found)
        return
    rows = [
        (k.name, f"{k.prefix}...", "revoked" if k.revoked else "active", when(k.created_at),
         when(k.expires_at), f"{k.rate_per_s:g}/s" if k.rate_per_s else "-", when(k.last_used_at), k.requests)
        for k in found
    ]  # fmt: skip
    print_table(
        ("NAME", "PREFIX", "STATE", "CREATED", "EXPIRES", "RATE", "LAST USED", "REQUESTS"),
        rows,
        f"{name} has no keys. Create one: kiln keys:create -a {name}",
    )


@click.command("keys:create")
@app_option
@click.option(
    "--name", "key_name", default="default", show_default=True, help="What the key is for."
)
@click.option("--expires", metavar="DURATION", help="Stop working after this long: 90m, 12h, 30d.")
@click.option("--rate", metavar="N/UNIT", help="Most requests it may make: 10/s, 600/m, 5000/h.")
@json_option
def keys_create(
    app: str | None, key_name: str, expires: str | None, rate: str | None, as_json: bool
) -> None:
    """Create an API key for the app; it is printed once."""
    name = resolve_app(app)
    body = ApiKeyCreate(
        name=key_name,
        expires_in_s=parse_duration(expires) if expires else None,
        rate_per_s=parse_rate(rate) if rate else None,
    )
    key = ApiClient.from_environment().post(app_path(name, "keys"), NewApiKey, body.model_dump())
    if as_json:
        emit_json(key)
        return
    click.echo(key.key)
    success(
        f"Created key {key.name} ({key.prefix}...) for {name}. It is shown only this once.",
        f"curl -H 'Authorization: Bearer {key.prefix}...' <the app's URL>",
    )


@click.command("keys:revoke")
@click.argument("prefix")
@app_option
def keys_revoke(prefix: str, app: str | None) -> None:
    """Revoke a key by its prefix (or id); every replica refuses it within seconds."""
    name = resolve_app(app)
    key = ApiClient.from_environment().delete(app_path(name, "keys", prefix), ApiKeyInfo)
    success(f"Revoked {key.name} ({key.prefix}...) of {name}.", f"kiln keys -a {name}")


COMMANDS = [addons, addons_create, addons_info, addons_destroy, keys, keys_create, keys_revoke]
