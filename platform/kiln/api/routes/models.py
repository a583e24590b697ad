"""``/models``: the platform's model cache (``kiln models``, ``kiln models:prune``)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from kiln.api.auth import StoreDep
from kiln.release.models import CachedModel, cached_models, prune

router = APIRouter(prefix="/models", tags=["models"])


@router.get("")
def list_models(store: StoreDep, request: Request) -> list[CachedModel]:
    return cached_models(store, request.app.state.settings)


@router.post("/prune")
def prune_models(store: StoreDep, request: Request) -> list[CachedModel]:
    return prune(store, request.app.state.settings)
