"""``kiln tokens``, ``tokens:create``, ``tokens:revoke``: platform tokens for the API, CLI and git."""

from __future__ import annotations

import click

from kiln.cli.options import json_option, when
from kiln.cli.output import emit_json, print_table, success
from kiln.client import TOKENS, ApiClient, path
from kiln.manifest.units import parse_duration
from kiln.models import NewToken, TokenCreate, TokenInfo, TokenScope


@click.command("tokens")
@json_option
def tokens(as_json: bool) -> None:
    """List platform tokens (never their secrets)."""
    found = ApiClient.from_environment().get(TOKENS, list[TokenInfo])
    if as_json:
        emit_json(found)
        return
    rows = [
        (t.id, t.name, f"{t.prefix}...", t.scope, ",".join(t.apps) or "(all)",
         when(t.expires_at) if t.expires_at else "never", when(t.last_used_at))
        for t in found
    ]  # fmt: skip
    print_table(
        ("ID", "NAME", "PREFIX", "SCOPE", "APPS", "EXPIRES", "LAST USED"), rows, "No tokens."
    )


@click.command("tokens:create")
@click.argument("name")
@click.option("--app", "apps", multiple=True, metavar="APP",
              help="An app the token is for (repeat for more); default: every app (admin).")  # fmt: skip
@click.option(
    "--scope",
    type=click.Choice([s.value for s in TokenScope]),
    help="admin (everything), deploy (its apps: push, config, scale, logs...) or read (its apps: "
    "look only); default: deploy with --app, else admin.",
)
@click.option("--expires", metavar="DURATION", help="Stop working after this long: 12h, 90d.")
@json_option
def tokens_create(
    name: str, apps: tuple[str, ...], scope: str | None, expires: str | None, as_json: bool
) -> None:
    """Create a platform token; its secret is printed once.

    kiln tokens:create ci --app chat --scope deploy --expires 90d
    """
    chosen = TokenScope(scope) if scope else (TokenScope.DEPLOY if apps else TokenScope.ADMIN)
    body = TokenCreate(
        name=name, scope=chosen, apps=list(apps),
        expires_in_s=parse_duration(expires) if expires else None,
    )  # fmt: skip
    token = ApiClient.from_environment().post(TOKENS, NewToken, body.model_dump(mode="json"))
    if as_json:
        emit_json(token)
        return
    click.echo(token.token)
    covers = "every app" if token.scope is TokenScope.ADMIN else ", ".join(token.apps)
    success(
        f"Created {token.scope} token {token.id} ({token.name}) for {covers}. It is shown only "
        "this once.",
        "export KILN_TOKEN=... on the machine that will use it",
    )


@click.command("tokens:revoke")
@click.argument("token_id", type=int, metavar="ID")
def tokens_revoke(token_id: int) -> None:
    """Revoke a platform token by its ID."""
    revoked = ApiClient.from_environment().delete(path("tokens", token_id), TokenInfo)
    success(f"Revoked token {revoked.id} ({revoked.name}).", "kiln tokens")


COMMANDS = [tokens, tokens_create, tokens_revoke]
