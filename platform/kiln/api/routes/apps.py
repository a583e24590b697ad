"""``/apps``: create, list, show and destroy apps."""

from __future__ import annotations

from fastapi import APIRouter, status

from kiln.api.auth import Caller
from kiln.api.deps import ReleaserDep, SettingsDep, StoreDep
from kiln.manifest import AddonKind
from kiln.models import AppCreate, AppInfo, TokenScope
from kiln.settings import Settings

router = APIRouter(prefix="/apps", tags=["apps"])


def _with_url(settings: Settings, info: AppInfo) -> AppInfo:
    return info.model_copy(update={"url": f"{settings.apps_url}/{info.name}/"})


@router.get("")
def list_apps(store: StoreDep, caller: Caller, settings: SettingsDep) -> list[AppInfo]:
    """Every app for an admin token; a deploy or read token's own apps."""
    return [
        _with_url(settings, app)
        for app in store.list_apps()
        if caller.scope is TokenScope.ADMIN or app.name in caller.apps
    ]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_app(
    body: AppCreate, store: StoreDep, releaser: ReleaserDep, caller: Caller, settings: SettingsDep
) -> AppInfo:
    created = store.create_app(body.name, actor=caller.name)
    if not body.public:  # every endpoint needs a key unless asked otherwise
        releaser.attach_addon(body.name, AddonKind.API_KEYS, None, caller.name)
    return _with_url(settings, created)


@router.get("/{app}")
def app_info(app: str, store: StoreDep, settings: SettingsDep) -> AppInfo:
    return _with_url(settings, store.get_app(app))


@router.delete("/{app}", status_code=status.HTTP_204_NO_CONTENT)
def destroy_app(app: str, releaser: ReleaserDep) -> None:
    releaser.destroy_app(app)
