"""``/apps/{app}/config``: an app's config vars; every change makes a new release."""

from __future__ import annotations

from fastapi import APIRouter, Request

from kiln.api.auth import Caller, StoreDep
from kiln.models import ConfigChange, ConfigUpdate

router = APIRouter(prefix="/apps/{app}/config", tags=["config"])


@router.get("")
def get_config(app: str, store: StoreDep) -> dict[str, str]:
    return store.get_config(app)


@router.patch("")
def update_config(
    app: str, body: ConfigUpdate, store: StoreDep, caller: Caller, request: Request
) -> ConfigChange:
    change = store.update_config(app, body.vars, actor=caller.name)
    if change.changed and request.app.state.reconciler is not None:
        request.app.state.reconciler.poke()  # roll the new config out
    return change
