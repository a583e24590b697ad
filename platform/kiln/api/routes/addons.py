"""``/apps/{app}/addons`` (attach, list, show, detach) and ``/apps/{app}/keys`` (api-keys)."""

from __future__ import annotations

from fastapi import APIRouter, status

from kiln.addons.base import provider_for
from kiln.api.auth import Caller
from kiln.api.deps import ReleaserDep, SettingsDep, StoreDep
from kiln.models import AddonCreate, AddonInfo, ApiKeyCreate, ApiKeyInfo, NewApiKey

router = APIRouter(prefix="/apps/{app}", tags=["addons"])


@router.get("/addons")
def list_addons(app: str, store: StoreDep) -> list[AddonInfo]:
    return [record.info() for record in store.addons.all(app)]


@router.post("/addons", status_code=status.HTTP_201_CREATED)
def create_addon(app: str, body: AddonCreate, releaser: ReleaserDep, caller: Caller) -> AddonInfo:
    return releaser.attach_addon(app, body.kind, body.name, caller.name)


@router.get("/addons/{name}")
def addon_info(app: str, name: str, store: StoreDep, settings: SettingsDep) -> AddonInfo:
    record = store.addons.get(app, name)
    return record.info(provider_for(record.kind, settings).status(record.state))


@router.delete("/addons/{name}")
def destroy_addon(app: str, name: str, releaser: ReleaserDep, caller: Caller) -> AddonInfo:
    return releaser.detach_addon(app, name, caller.name)


@router.get("/keys")
def list_keys(app: str, store: StoreDep) -> list[ApiKeyInfo]:
    """The app's keys and their use (counted every few seconds from the replicas)."""
    return store.keys.all(app)


@router.post("/keys", status_code=status.HTTP_201_CREATED)
def create_key(app: str, body: ApiKeyCreate, releaser: ReleaserDep) -> NewApiKey:
    return releaser.create_key(app, body.name, body.expires_in_s, body.rate_per_s)


@router.delete("/keys/{prefix}")
def revoke_key(app: str, prefix: str, releaser: ReleaserDep) -> ApiKeyInfo:
    return releaser.revoke_key(app, prefix)  # the replicas refuse it within about a second
