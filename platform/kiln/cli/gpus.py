"""``kiln gpus``: every node's GPUs (type, memory, use, temperature, processes by app)."""

from __future__ import annotations

import click

from kiln.cli.options import json_option
from kiln.cli.output import console, emit_json, print_table
from kiln.client import NODES, ApiClient
from kiln.models import NodeInventory


@click.command("gpus")
@json_option
def gpus(as_json: bool) -> None:
    """Show each node's GPUs, and which app's dynos use them."""
    nodes = ApiClient.from_environment().get(NODES, list[NodeInventory])
    if as_json:
        emit_json(nodes)
        return
    out = console()
    for node in nodes:
        out.print(f"=== node {node.node_ip or node.node_id[:8]} ({node.hostname})", highlight=False)
        if node.cpu_only_reason:
            out.print(f"CPU only: {node.cpu_only_reason}", highlight=False)
            continue
        rows = [
            (g.index, g.name, f"{g.memory_used / 2**30:.1f}/{g.memory_total / 2**30:.0f} GiB",
             f"{g.utilization}%" if g.utilization is not None else "-",
             f"{g.temperature}C" if g.temperature is not None else "-",
             ", ".join(f"{p.app or 'pid ' + str(p.pid)}" + (f" ({p.replica})" if p.replica else "") for p in g.processes) or "-")
            for g in node.gpus
        ]  # fmt: skip
        print_table(("GPU", "NAME", "MEMORY", "UTIL", "TEMP", "PROCESSES"), rows, "no GPUs")


COMMANDS = [gpus]
