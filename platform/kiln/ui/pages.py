"""The dashboard's pages and forms: apps, one app (releases with rollback, builds, replicas,
config, API keys, add-ons, charts, live logs), a build's log, nodes and GPUs, the model cache.
Each shows what the API's routes return, through the same functions, and each form makes the
same call the CLI would (with the signed-in token's scope)."""

from __future__ import annotations

__all__ = ["router"]

import time
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kiln.api.deps import PlatformDep
from kiln.api.routes.formation import process_list
from kiln.control.platform import Platform
from kiln.errors import KilnError
from kiln.manifest import AddonKind
from kiln.models import ProcessList, RequestFigures
from kiln.release.models import cached_models
from kiln.route.figures import summarize
from kiln.run.logs import records_since
from kiln.run.nodes import node_statuses
from kiln.ui.auth import Viewer, ViewerDep
from kiln.ui.templates import page

router = APIRouter()
OVERVIEW_S = 300.0  # the apps page's figures: the last five minutes
Csrf = Annotated[str, Form(max_length=200)]


def process(platform: Platform, app: str) -> ProcessList | None:
    """The app's ``kiln ps``; None on a control plane that runs no apps."""
    if platform.reconciler is None:
        return None
    return process_list(app, platform.store, platform.reconciler, platform.gpus, platform.settings)


def figures(platform: Platform, app: str, window_s: float) -> RequestFigures:
    now = time.time()
    total, _releases = summarize(records_since(platform.settings.log_dir, app, now - window_s),
                                 window_s)  # fmt: skip
    return total


def app_state(platform: Platform, who: Viewer, app: str) -> dict[str, Any]:
    """What the app page's live part shows: state, replicas, releases, builds."""
    store = platform.store
    return {
        "app": store.get_app(app),
        "url": f"{platform.settings.apps_url}/{app}/",
        "ps": process(platform, app),
        "releases": list(reversed(store.list_releases(app)))[:15],
        "builds": sorted(store.builds.list(app), key=lambda b: -b.id)[:10],
        "may_rollback": who.may("POST", "/apps/{app}/releases/rollback", app),
        "csrf": who.session.csrf,
    }


@router.get("/", response_class=HTMLResponse)
def apps(request: Request, platform: PlatformDep, who: ViewerDep) -> Response:
    rows = []
    for info in platform.store.list_apps():
        if not who.may("GET", "/apps/{app}", info.name):
            continue
        ps = process(platform, info.name)
        rows.append({
            "name": info.name, "release": info.release,
            "status": ps.status if ps else "-",
            "running": ps.running if ps else 0,
            "figures": figures(platform, info.name, OVERVIEW_S),
            "url": f"{platform.settings.apps_url}/{info.name}/",
        })  # fmt: skip
    return page(request, "apps.html", {"who": who, "rows": rows, "window": "5 min"})


@router.get("/apps/{app}", response_class=HTMLResponse)
def app_page(request: Request, app: str, platform: PlatformDep, who: ViewerDep) -> Response:
    who.require("GET", "/apps/{app}", app)
    return page(request, "app.html", _app_context(platform, who, app))


def _app_context(platform: Platform, who: Viewer, app: str, **extra: Any) -> dict[str, Any]:
    store = platform.store
    may_config = who.may("GET", "/apps/{app}/config", app)
    config = store.get_config(app)
    has_keys = store.addons.has_kind(app, AddonKind.API_KEYS.value)
    return {
        "who": who, **app_state(platform, who, app),
        "hour": figures(platform, app, 3600),
        "config": {k: (v if may_config else None) for k, v in sorted(config.items())},
        "addons": [record.info() for record in store.addons.all(app)],
        "keys": store.keys.all(app) if has_keys else None,
        "may_keys": who.may("POST", "/apps/{app}/keys", app),
        **extra,
    }  # fmt: skip


def _back(app: str) -> Response:
    return RedirectResponse(f"/ui/apps/{app}", status_code=303)


def _failed(
    request: Request, platform: Platform, who: Viewer, app: str, exc: KilnError
) -> Response:
    return page(request, "app.html", _app_context(platform, who, app, flash=exc.message),
                status=exc.status)  # fmt: skip


@router.post("/apps/{app}/rollback")
def rollback(
    request: Request, app: str, platform: PlatformDep, who: ViewerDep, csrf: Csrf = "",
    version: Annotated[int | None, Form()] = None,
) -> Response:  # fmt: skip
    who.check_form(csrf)
    who.require("POST", "/apps/{app}/releases/rollback", app)
    try:
        platform.releaser.rollback(app, version, f"{who.token.name} (dashboard)")
    except KilnError as exc:
        return _failed(request, platform, who, app, exc)
    return _back(app)


@router.post("/apps/{app}/keys", response_class=HTMLResponse)
def create_key(
    request: Request, app: str, platform: PlatformDep, who: ViewerDep, csrf: Csrf = "",
    name: Annotated[str, Form(min_length=1, max_length=100)] = "default",
) -> Response:  # fmt: skip
    who.check_form(csrf)
    who.require("POST", "/apps/{app}/keys", app)
    try:
        key = platform.releaser.create_key(app, name, None, None)
    except KilnError as exc:
        return _failed(request, platform, who, app, exc)
    return page(request, "app.html", _app_context(platform, who, app, new_key=key))


@router.post("/apps/{app}/keys/{prefix}/revoke")
def revoke_key(
    request: Request, app: str, prefix: str, platform: PlatformDep, who: ViewerDep,
    csrf: Csrf = "",
) -> Response:  # fmt: skip
    who.check_form(csrf)
    who.require("DELETE", "/apps/{app}/keys/{prefix}", app)
    try:
        platform.releaser.revoke_key(app, prefix)
    except KilnError as exc:
        return _failed(request, platform, who, app, exc)
    return _back(app)


@router.get("/apps/{app}/builds/{build_id}", response_class=HTMLResponse)
def build_page(
    request: Request, app: str, build_id: int, platform: PlatformDep, who: ViewerDep
) -> Response:
    who.require("GET", "/apps/{app}/builds/{build_id}", app)
    build = platform.store.builds.get(app, build_id)
    return page(request, "build.html", {"who": who, "app": app, "build": build})


@router.get("/nodes", response_class=HTMLResponse)
def nodes(request: Request, platform: PlatformDep, who: ViewerDep) -> Response:
    who.require("GET", "/nodes")
    found, inventory, problem = [], [], None
    if platform.reconciler is not None:
        try:
            gpus = platform.gpus
            found = node_statuses(gpus.state_nodes(), platform.reconciler.backend.status(),
                                  gpus.draining)  # fmt: skip
            inventory = gpus.inventory()
        except KilnError as exc:
            problem = exc.message
    else:
        problem = "this control plane runs no apps (started with --no-run)"
    return page(request, "nodes.html",
                {"who": who, "nodes": found, "inventory": inventory, "problem": problem})  # fmt: skip


@router.get("/models", response_class=HTMLResponse)
def models(request: Request, platform: PlatformDep, who: ViewerDep) -> Response:
    who.require("GET", "/models")
    cached = cached_models(platform.store, platform.settings)
    return page(request, "models.html", {"who": who, "models": cached})
