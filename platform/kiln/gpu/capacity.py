"""Can a release's replicas ever be placed? A pure check of GPU needs against the cluster's nodes.

    choose_gpu((GpuSpec.parse("H100:2"),), [NodeResources("gpu-1", 1, "H100")])
    -> (None, "needs 2 x H100 per replica; the largest H100 node has 1 (node gpu-1)")

If a spec can never fit (no node with that GPU type, or more GPUs per replica than any node has),
the release fails at once with that reason. If it fits but GPUs are busy, Serve keeps the replica
pending and the previous release serving.
"""

from __future__ import annotations

__all__ = ["NodeResources", "choose_gpu", "nodes_from_state"]

from dataclasses import dataclass
from typing import Any

from kiln.manifest import Accelerator, GpuSpec


@dataclass(frozen=True)
class NodeResources:
    node: str  # its name or IP, for messages
    gpus: float
    accelerator: str | None = None  # Ray's accelerator_type label, e.g. "H100"


def _count(value: float) -> str:
    return f"{value:g}"


def choose_gpu(
    specs: tuple[GpuSpec, ...], nodes: list[NodeResources]
) -> tuple[GpuSpec | None, str | None]:
    """The first spec, in order of preference, that some node can hold; else why none can."""
    if not specs:
        return None, None
    reasons = []
    for spec in specs:
        kind = spec.type.value
        able = [
            n
            for n in nodes
            if n.gpus > 0 and (spec.type is Accelerator.ANY or n.accelerator == kind)
        ]
        label = "GPU" if spec.type is Accelerator.ANY else kind
        if not able:
            have = sorted({n.accelerator or "GPU" for n in nodes if n.gpus > 0})
            reasons.append(
                f"no node has {label}s (the cluster has: {', '.join(have) or 'no GPUs'})"
            )
            continue
        largest = max(able, key=lambda n: n.gpus)
        needed = max(spec.count, 1.0) if spec.count >= 1 else spec.count
        if needed > largest.gpus:
            reasons.append(
                f"needs {_count(spec.count)} x {label} per replica; the largest {label} node has "
                f"{_count(largest.gpus)} (node {largest.node})"
            )
            continue
        return spec, None
    return None, "; ".join(reasons)


def nodes_from_state(nodes: list[dict[str, Any]]) -> list[NodeResources]:
    """NodeResources from Ray's state API (``GET /api/v0/nodes``), alive nodes only."""
    found = []
    for node in nodes:
        if node.get("state") not in (None, "ALIVE"):
            continue
        resources = node.get("resources_total") or {}
        accelerator = next(
            (k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")), None
        )
        found.append(
            NodeResources(
                node=node.get("node_name")
                or node.get("node_ip")
                or str(node.get("node_id", "?"))[:8],
                gpus=float(resources.get("GPU", 0)),
                accelerator=accelerator,
            )
        )
    return found
