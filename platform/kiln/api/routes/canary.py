"""``/apps/{app}/canary``: the app's canary beside the release before it; promote or abort it."""

from __future__ import annotations

from fastapi import APIRouter

from kiln.api.auth import Caller
from kiln.api.deps import ReleaserDep, SettingsDep, StoreDep
from kiln.models import CanaryInfo, ReleaseInfo
from kiln.release.canary import canary_info

router = APIRouter(prefix="/apps/{app}/canary", tags=["canary"])


@router.get("")
def show(app: str, store: StoreDep, settings: SettingsDep) -> CanaryInfo:
    return canary_info(store, settings, app)


@router.post("/promote")
def promote(app: str, releaser: ReleaserDep, caller: Caller) -> ReleaseInfo:
    """Roll the canary out to every replica."""
    return releaser.end_canary(app, promote=True, reason="asked for", actor=caller.name)


@router.post("/abort")
def abort(app: str, releaser: ReleaserDep, caller: Caller) -> ReleaseInfo:
    """Every replica goes back to the release before the canary; the canary fails."""
    return releaser.end_canary(app, promote=False, reason="asked for", actor=caller.name)
