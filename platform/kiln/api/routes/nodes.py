"""``/nodes``: the cluster's nodes, their GPUs (``kiln gpus``), what runs where (``kiln
nodes``), and draining one before it leaves (``kiln nodes:drain``)."""

from __future__ import annotations

from fastapi import APIRouter

from kiln.api.deps import GpusDep, ReconcilerDep, SettingsDep
from kiln.models import NodeInventory, NodeStatus
from kiln.run.nodes import drain, find_node, node_statuses

router = APIRouter(tags=["nodes"])


@router.get("/nodes")
def nodes(_reconciler: ReconcilerDep, gpus: GpusDep) -> list[NodeInventory]:
    """Only a platform that runs apps has nodes (503 otherwise)."""
    return gpus.inventory()


@router.get("/nodes/status")
def node_status(reconciler: ReconcilerDep, gpus: GpusDep) -> list[NodeStatus]:
    """Every node with its resources, what its dynos reserve, and which dynos it runs."""
    return node_statuses(gpus.state_nodes(), reconciler.backend.status(), gpus.draining)


@router.post("/nodes/{node}/drain")
def drain_node(
    node: str, reconciler: ReconcilerDep, gpus: GpusDep, settings: SettingsDep
) -> NodeStatus:
    """Place nothing more on ``node`` (name, address or id) and move its replicas to other
    nodes: Serve starts each one elsewhere before it stops it there."""
    found = find_node(node_statuses(gpus.state_nodes(), reconciler.backend.status(), set()), node)
    drain(settings, found.node_id)
    gpus.draining.add(found.node_id)
    return found.model_copy(update={"state": "DRAINING"})
