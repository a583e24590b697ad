"""``/apps/{app}/releases``: the numbered, immutable history of what an app ran."""

from __future__ import annotations

from fastapi import APIRouter

from kiln.api.auth import StoreDep
from kiln.models import ReleaseInfo

router = APIRouter(prefix="/apps/{app}/releases", tags=["releases"])


@router.get("")
def list_releases(app: str, store: StoreDep) -> list[ReleaseInfo]:
    return store.list_releases(app)


@router.get("/{version}")
def release_info(app: str, version: int, store: StoreDep) -> ReleaseInfo:
    return store.get_release(app, version)
