"""``/apps/{app}/config``: an app's config vars; every change makes a new release."""

from __future__ import annotations

from fastapi import APIRouter

from kiln.api.auth import Caller
from kiln.api.deps import ReleaserDep, StoreDep
from kiln.models import ConfigChange, ConfigUpdate

router = APIRouter(prefix="/apps/{app}/config", tags=["config"])


@router.get("")
def get_config(app: str, store: StoreDep) -> dict[str, str]:
    return store.get_config(app)


@router.patch("")
def update_config(
    app: str, body: ConfigUpdate, releaser: ReleaserDep, caller: Caller
) -> ConfigChange:
    return releaser.set_config(app, body.vars, caller.name)
