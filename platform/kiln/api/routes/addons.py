"""``/apps/{app}/addons`` (attach, list, show, detach) and ``/apps/{app}/keys`` (api-keys)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fastapi import APIRouter, status

from kiln.addons.base import provider_for
from kiln.api.auth import Caller
from kiln.api.deps import ReleaserDep, SettingsDep, StoreDep
from kiln.models import AddonCreate, AddonInfo, ApiKeyCreate, ApiKeyInfo, NewApiKey
from kiln.run.logs import read_records
from kiln.settings import Settings

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


def _usage(settings: Settings, app: str) -> dict[int, tuple[int, float]]:
    totals: dict[int, tuple[int, float]] = {}
    for record in read_records(settings.log_dir, app):
        if record.source != "usage":
            continue
        for key, (count, last) in json.loads(record.line).items():
            seen, latest = totals.get(int(key), (0, 0.0))
            totals[int(key)] = (seen + count, max(latest, last))
    return totals


@router.get("/keys")
def list_keys(app: str, store: StoreDep, settings: SettingsDep) -> list[ApiKeyInfo]:
    usage = _usage(settings, app)
    keys = []
    for key in store.keys.all(app):
        count, last = usage.get(key.id, (0, 0.0))
        keys.append(key.model_copy(update={
            "requests": count, "last_used_at": datetime.fromtimestamp(last, UTC) if last else None,
        }))  # fmt: skip
    return keys


@router.post("/keys", status_code=status.HTTP_201_CREATED)
def create_key(app: str, body: ApiKeyCreate, releaser: ReleaserDep) -> NewApiKey:
    return releaser.create_key(app, body.name, body.expires_in_s, body.rate_per_s)


@router.delete("/keys/{prefix}")
def revoke_key(app: str, prefix: str, releaser: ReleaserDep) -> ApiKeyInfo:
    return releaser.revoke_key(app, prefix)  # the replicas refuse it within about a second
