"""``/apps/{app}/addons`` (attach, list, show, detach) and ``/apps/{app}/keys`` (api-keys)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fastapi import APIRouter, Request, status

from kiln.addons.attach import attach
from kiln.addons.base import provider_for
from kiln.api.auth import Caller, StoreDep
from kiln.manifest import AddonKind
from kiln.models import AddonCreate, AddonInfo, ApiKeyCreate, ApiKeyInfo, NewApiKey
from kiln.run.logs import read_records
from kiln.settings import Settings
from kiln.store import Store

router = APIRouter(prefix="/apps/{app}", tags=["addons"])


def _poke(request: Request) -> None:
    if request.app.state.reconciler is not None:
        request.app.state.reconciler.poke()


@router.get("/addons")
def list_addons(app: str, store: StoreDep) -> list[AddonInfo]:
    return [
        AddonInfo(
            name=name, kind=kind, created_at=created, config_vars=state.get("config_vars", [])
        )
        for name, kind, created, state in store.addons.all(app)
    ]


@router.post("/addons", status_code=status.HTTP_201_CREATED)
def create_addon(
    app: str, body: AddonCreate, store: StoreDep, caller: Caller, request: Request
) -> AddonInfo:
    info = attach(store, request.app.state.settings, app, body.kind, body.name, caller.name)
    _poke(request)
    return info


@router.get("/addons/{name}")
def addon_info(app: str, name: str, store: StoreDep, request: Request) -> AddonInfo:
    kind, state = store.addons.get(app, name)
    created = next(c for n, _k, c, _s in store.addons.all(app) if n == name)
    provider = provider_for(kind, request.app.state.settings)
    return AddonInfo(name=name, kind=kind, created_at=created, config_vars=state.get("config_vars", []),
                     status=provider.status(state))  # fmt: skip


@router.delete("/addons/{name}")
def destroy_addon(
    app: str, name: str, store: StoreDep, caller: Caller, request: Request
) -> AddonInfo:
    kind, state = store.addons.get(app, name)
    created = next(c for n, _k, c, _s in store.addons.all(app) if n == name)
    variables = list(state.get("config_vars", []))
    if variables:
        store.update_config(app, dict.fromkeys(variables), actor=f"{caller.name} (add-on {name})")
    provider_for(kind, request.app.state.settings).deprovision(app, state)
    store.addons.remove(app, name)
    _poke(request)
    return AddonInfo(
        name=name, kind=kind, created_at=created, config_vars=variables, status="destroyed"
    )


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
def list_keys(app: str, store: StoreDep, request: Request) -> list[ApiKeyInfo]:
    usage = _usage(request.app.state.settings, app)
    keys = []
    for key in store.keys.all(app):
        count, last = usage.get(key.id, (0, 0.0))
        keys.append(key.model_copy(update={
            "requests": count, "last_used_at": datetime.fromtimestamp(last, UTC) if last else None,
        }))  # fmt: skip
    return keys


@router.post("/keys", status_code=status.HTTP_201_CREATED)
def create_key(app: str, body: ApiKeyCreate, store: StoreDep, request: Request) -> NewApiKey:
    key = store.keys.create(app, body.name, body.expires_in_s, body.rate_per_s)
    _poke(request)
    return key


@router.delete("/keys/{prefix}")
def revoke_key(app: str, prefix: str, store: StoreDep, request: Request) -> ApiKeyInfo:
    key = store.keys.revoke(app, prefix)
    _poke(request)  # the replicas stop accepting it within about a second
    return key


def enforced(store: Store, app: str) -> bool:
    return store.addons.has_kind(app, AddonKind.API_KEYS.value)
