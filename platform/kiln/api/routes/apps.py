"""``/apps``: create, list, show and destroy apps."""

from __future__ import annotations

from fastapi import APIRouter, status

from kiln.api.auth import Caller, StoreDep
from kiln.models import AppCreate, AppInfo

router = APIRouter(prefix="/apps", tags=["apps"])


@router.get("")
def list_apps(store: StoreDep) -> list[AppInfo]:
    return store.list_apps()


@router.post("", status_code=status.HTTP_201_CREATED)
def create_app(body: AppCreate, store: StoreDep, caller: Caller) -> AppInfo:
    return store.create_app(body.name, actor=caller.name)


@router.get("/{app}")
def app_info(app: str, store: StoreDep) -> AppInfo:
    return store.get_app(app)


@router.delete("/{app}", status_code=status.HTTP_204_NO_CONTENT)
def destroy_app(app: str, store: StoreDep) -> None:
    store.destroy_app(app)
