"""Can a release's replicas ever be placed? A pure check of GPU needs against the cluster's nodes.

    choose_gpu((GpuSpec.parse("H100:2"),), [NodeResources("gpu-1", 1, "H100")])
    -> (None, "needs 2 x H100 per replica; the largest H100 node has 1 (node gpu-1)")

If a spec can never fit (no node with that GPU type, or more GPUs per replica than any node has),
the release fails at once with that reason. If it fits but GPUs are busy, Serve keeps the replica
pending and the previous release serving.

With ``gpu_memory``, a shared GPU is reserved by memory: a replica asking for 20Gi of an 80Gi GPU
reserves at least 0.25 of it in Ray's accounting, so Ray never packs more replicas onto one GPU than
their memory allows (reservations, not NVML's free memory: a dyno can still use more than it said).
"""

from __future__ import annotations

__all__ = ["NodeResources", "choose_gpu", "nodes_from_state", "with_gpu_memory"]

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from kiln.manifest import Accelerator, GpuSpec, Memory
from kiln.models import NodeInventory


@dataclass(frozen=True)
class NodeResources:
    node: str  # its name or IP, for messages
    gpus: float
    accelerator: str | None = None  # Ray's accelerator_type label, e.g. "H100"
    gpu_memory: int | None = None  # bytes on its smallest GPU, where NVML told us
    node_id: str = ""


def _count(value: float) -> str:
    return f"{value:g}"


def choose_gpu(
    specs: tuple[GpuSpec, ...], nodes: list[NodeResources], memory: Memory | None = None
) -> tuple[GpuSpec | None, str | None]:
    """The first spec, in order of preference, that some node can hold; else why none can.
    With ``memory`` (GPU memory per replica), GPUs too small are ruled out and a fraction grows
    to the share of the GPU that memory is."""
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
        if memory is None:
            return spec, None
        sized, reason = _by_memory(spec, able, memory, label)
        if reason is None:
            return sized, None
        reasons.append(reason)
    return None, "; ".join(reasons)


def _by_memory(
    spec: GpuSpec, able: list[NodeResources], memory: Memory, label: str
) -> tuple[GpuSpec, str | None]:
    known = [n for n in able if n.gpu_memory]
    if not known:  # no NVML figures (e.g. no driver library on the nodes): count GPUs only
        return spec, None
    fitting = [n for n in known if n.gpu_memory and n.gpu_memory >= memory.bytes]
    if not fitting:
        largest = max(known, key=lambda n: n.gpu_memory or 0)
        return spec, (
            f"needs {memory} of GPU memory per replica; the largest {label} has "
            f"{Memory(largest.gpu_memory or 0)} (node {largest.node})"
        )
    if spec.count >= 1:
        return spec, None
    # The share of the smallest GPU that fits; on a bigger one it reserves more than it needs.
    smallest = min(n.gpu_memory or 0 for n in fitting)
    share = math.ceil(memory.bytes / smallest * 100) / 100
    return dataclasses.replace(spec, count=min(1.0, max(spec.count, share))), None


def with_gpu_memory(
    nodes: list[NodeResources], inventory: list[NodeInventory]
) -> list[NodeResources]:
    """Each node's smallest GPU memory, from the NVML inventory, matched by Ray node id."""
    smallest = {
        node.node_id: min(g.memory_total for g in node.gpus) for node in inventory if node.gpus
    }
    return [dataclasses.replace(n, gpu_memory=smallest.get(n.node_id)) for n in nodes]


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
                node_id=str(node.get("node_id", "")),
            )
        )
    return found
