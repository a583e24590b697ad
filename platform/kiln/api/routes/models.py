"""``/models``: the platform's model cache (``kiln models``, ``kiln models:prune``)."""

from __future__ import annotations

from fastapi import APIRouter

from kiln.api.deps import SettingsDep, StoreDep
from kiln.models import CachedModel
from kiln.release.models import cached_models, prune

router = APIRouter(prefix="/models", tags=["models"])


@router.get("")
def list_models(store: StoreDep, settings: SettingsDep) -> list[CachedModel]:
    return cached_models(store, settings)


@router.post("/prune")
def prune_models(store: StoreDep, settings: SettingsDep) -> list[CachedModel]:
    return prune(store, settings)
