"""``/apps/{app}/releases``: the numbered, immutable history of what an app ran."""

from __future__ import annotations

from fastapi import APIRouter, status

from kiln.api.auth import Caller
from kiln.api.deps import ReleaserDep, StoreDep
from kiln.models import ReleaseInfo, RollbackRequest

router = APIRouter(prefix="/apps/{app}/releases", tags=["releases"])


@router.get("")
def list_releases(app: str, store: StoreDep) -> list[ReleaseInfo]:
    return store.list_releases(app)


@router.get("/{version}")
def release_info(app: str, version: int, store: StoreDep) -> ReleaseInfo:
    return store.get_release(app, version)


@router.post("/rollback", status_code=status.HTTP_201_CREATED)
def rollback(app: str, body: RollbackRequest, releaser: ReleaserDep, caller: Caller) -> ReleaseInfo:
    """A new release that runs an earlier one's artifact and config (``kiln rollback [vN]``)."""
    return releaser.rollback(app, body.version, caller.name)
