"""``/nodes``: the cluster's nodes and their GPUs (``kiln gpus``)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from kiln.api.routes.formation import reconciler_of
from kiln.gpu.inventory import NodeInventory

router = APIRouter(tags=["nodes"])


@router.get("/nodes")
def nodes(request: Request) -> list[NodeInventory]:
    reconciler_of(request)  # only a platform that runs apps has nodes
    inventory: list[NodeInventory] = request.app.state.gpus.inventory()
    return inventory
