"""``/nodes``: the cluster's nodes and their GPUs (``kiln gpus``)."""

from __future__ import annotations

from fastapi import APIRouter

from kiln.api.deps import GpusDep, ReconcilerDep
from kiln.models import NodeInventory

router = APIRouter(tags=["nodes"])


@router.get("/nodes")
def nodes(_reconciler: ReconcilerDep, gpus: GpusDep) -> list[NodeInventory]:
    """Only a platform that runs apps has nodes (503 otherwise)."""
    return gpus.inventory()
