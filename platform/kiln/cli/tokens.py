"""``kiln tokens``, ``tokens:create``, ``tokens:revoke``: platform tokens for the API, CLI and git."""

from __future__ import annotations

import click

from kiln.cli.client import ApiClient
from kiln.cli.options import json_option, when
from kiln.cli.output import emit_json, print_table, success
from kiln.models import NewToken, TokenCreate, TokenInfo


@click.command("tokens")
@json_option
def tokens(as_json: bool) -> None:
    """List platform tokens (never their secrets)."""
    found = ApiClient.from_environment().get("/tokens", list[TokenInfo])
    if as_json:
        emit_json(found)
        return
    rows = [
        (t.id, t.name, f"{t.prefix}...", when(t.created_at), when(t.last_used_at)) for t in found
    ]
    print_table(("ID", "NAME", "PREFIX", "CREATED", "LAST USED"), rows, "No tokens.")


@click.command("tokens:create")
@click.argument("name")
@json_option
def tokens_create(name: str, as_json: bool) -> None:
    """Create a platform token; its secret is printed once."""
    token = ApiClient.from_environment().post(
        "/tokens", NewToken, TokenCreate(name=name).model_dump()
    )
    if as_json:
        emit_json(token)
        return
    click.echo(token.token)
    success(
        f"Created token {token.id} ({token.name}). It is shown only this once.",
        "export KILN_TOKEN=... on the machine that will use it",
    )


@click.command("tokens:revoke")
@click.argument("token_id", type=int, metavar="ID")
def tokens_revoke(token_id: int) -> None:
    """Revoke a platform token by its ID."""
    revoked = ApiClient.from_environment().delete(f"/tokens/{token_id}", TokenInfo)
    success(f"Revoked token {revoked.id} ({revoked.name}).", "kiln tokens")


COMMANDS = [tokens, tokens_create, tokens_revoke]
