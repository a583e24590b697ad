"""``/apps``: create, list, show and destroy apps."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from kiln.api.auth import Caller, StoreDep
from kiln.models import AppCreate, AppInfo, TokenScope

router = APIRouter(prefix="/apps", tags=["apps"])


def _with_url(request: Request, info: AppInfo) -> AppInfo:
    return info.model_copy(update={"url": f"{request.app.state.settings.apps_url}/{info.name}/"})


@router.get("")
def list_apps(store: StoreDep, caller: Caller, request: Request) -> list[AppInfo]:
    """Every app for an admin token; a deploy or read token's own apps."""
    return [
        _with_url(request, app)
        for app in store.list_apps()
        if caller.scope is TokenScope.ADMIN or app.name in caller.apps
    ]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_app(body: AppCreate, store: StoreDep, caller: Caller, request: Request) -> AppInfo:
    created = store.create_app(body.name, actor=caller.name)
    if not body.public:  # every endpoint needs a key unless asked otherwise
        from kiln.addons.attach import attach

        attach(store, request.app.state.settings, body.name, "api-keys", None, caller.name)
    return _with_url(request, created)


@router.get("/{app}")
def app_info(app: str, store: StoreDep, request: Request) -> AppInfo:
    return _with_url(request, store.get_app(app))


@router.delete("/{app}", status_code=status.HTTP_204_NO_CONTENT)
def destroy_app(app: str, store: StoreDep, request: Request) -> None:
    store.destroy_app(app)
    if request.app.state.reconciler is not None:
        request.app.state.reconciler.poke()  # its Serve application goes with it
