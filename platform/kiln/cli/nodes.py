"""``kiln nodes``, ``nodes:join``, ``nodes:token``, ``nodes:drain``: the machines of a cluster."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import click

from kiln.cli.options import json_option
from kiln.cli.output import console, emit_json, print_table, success
from kiln.client import NODE_STATUS, ApiClient
from kiln.models import NodeStatus
from kiln.settings import Settings


def _count(used: float, total: float) -> str:
    return f"{used:g}/{total:g}" if total else "-"


@click.command("nodes")
@json_option
def nodes(as_json: bool) -> None:
    """Show the cluster's nodes: state, CPUs and GPUs their dynos reserve, and their dynos."""
    found = ApiClient.from_environment().get(NODE_STATUS, list[NodeStatus])
    if as_json:
        emit_json(found)
        return
    rows = [
        (n.name + (" (head)" if n.head else ""), n.address, n.state,
         _count(n.cpus_used, n.cpus), _count(n.gpus_used, n.gpus) + (f" {n.accelerator}" if n.accelerator else ""),
         ", ".join(n.dynos) or "-")
        for n in found
    ]  # fmt: skip
    print_table(("NODE", "ADDRESS", "STATE", "CPUS", "GPUS", "DYNOS"), rows, "no nodes")


@click.command("nodes:drain")
@click.argument("node")
def drain(node: str) -> None:
    """Move the dynos off NODE (name, address or id) before it leaves: Serve starts each one
    on another node, then stops it there; nothing new is placed on NODE."""
    found = ApiClient.from_environment().post(f"/nodes/{quote(node, safe='')}/drain", NodeStatus)
    success(
        f"Draining {found.name} ({found.address}): its {len(found.dynos)} dyno(s) move to other "
        "nodes.",
        f"kiln nodes   (then, on {found.name}: kiln down)",
    )


@click.command("nodes:token")
@click.option("--home", type=click.Path(path_type=Path), help="The head's KILN_HOME.")
def token(home: Path | None) -> None:
    """Print the token other machines join this head with (on the head; it is a secret: it
    holds Ray's token and the platform's key)."""
    from kiln.run.nodes import join_token

    settings = Settings(home=home) if home else Settings()
    click.echo(join_token(settings).encode())


@click.command("nodes:join")
@click.argument("head")
@click.option("--token", "join", required=True, envvar="KILN_JOIN_TOKEN",
              help="The head's join token (kiln nodes:token there).")  # fmt: skip
@click.option("--home", type=click.Path(path_type=Path),
              help="This node's state directory (KILN_HOME).")  # fmt: skip
@click.option(
    "--address", help="This node's address the others reach  [default: the route to HEAD]"
)
@click.option("--name", help="The node's name in kiln nodes and logs  [default: its hostname]")
@click.option("--num-cpus", type=float, help="CPUs offered to dynos  [default: the machine's]")
@click.option("--num-gpus", type=float, help="GPUs offered  [default: those Ray finds]")
def join(
    head: str, join: str, home: Path | None, address: str | None, name: str | None,
    num_cpus: float | None, num_gpus: float | None,
) -> None:  # fmt: skip
    """Join this machine to the cluster whose head is HEAD (host or host:port) as a Ray worker
    node with its CPUs and GPUs; it runs in the background until kiln down."""
    from kiln.run.nodes import JoinToken, WorkerNode

    settings = Settings(home=home) if home else Settings()
    pid, where = WorkerNode(settings).join(
        JoinToken.decode(join), head, address=address, name=name, num_cpus=num_cpus,
        num_gpus=num_gpus,
    )  # fmt: skip
    console().print(f"Joined {head} as {name or 'this host'} at {where} (Ray pid {pid}).")
    console().print("[dim]Next: kiln nodes (on the head); kiln down leaves[/dim]")


COMMANDS = [nodes, join, token, drain]
