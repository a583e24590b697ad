"""``/apps/{app}/formation`` (``kiln scale``/``autoscale``) and ``/apps/{app}/ps``."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from kiln.api.auth import StoreDep
from kiln.errors import InvalidInput, KilnError, Unavailable
from kiln.gpu.inventory import gpus_by_dyno
from kiln.manifest import Manifest
from kiln.models import Formation, ProcessList, ReplicaGpu, ReplicaInfo
from kiln.run.reconciler import Reconciler

router = APIRouter(prefix="/apps/{app}", tags=["formation"])


def reconciler_of(request: Request) -> Reconciler:
    reconciler: Reconciler | None = request.app.state.reconciler
    if reconciler is None:
        raise Unavailable(
            "this control plane does not run apps (started with --no-run); start it with kiln up",
            code="run_stage_off",
        )
    return reconciler


def app_url(request: Request, app: str) -> str:
    return f"{request.app.state.settings.apps_url}/{app}/"


def effective_formation(store: StoreDep, app: str) -> Formation:
    stored = store.get_formation(app)
    if stored:
        return Formation.model_validate_json(stored)
    deployments = {d.app: d for d in store.deployables()}
    manifest_json = deployments[app].manifest if app in deployments else None
    scaling = (Manifest.model_validate_json(manifest_json) if manifest_json else Manifest()).scaling
    return Formation(
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas,
        target_ongoing_requests=scaling.target_ongoing_requests,
    )


@router.get("/formation")
def get_formation(app: str, store: StoreDep) -> Formation:
    return effective_formation(store, app)


@router.put("/formation")
def set_formation(app: str, body: Formation, store: StoreDep, request: Request) -> Formation:
    """Fixed when min = max (``kiln scale N``); autoscaled between them otherwise."""
    if body.max_replicas < body.min_replicas:
        raise InvalidInput(
            f"max_replicas ({body.max_replicas}) must be >= min_replicas ({body.min_replicas})",
            code="bad_formation",
        )
    if body.max_replicas == 0 and body.min_replicas == 0:
        pass  # scale 0: stop every dyno, keep the app and its releases
    elif body.max_replicas < 1:
        raise InvalidInput("max_replicas must be at least 1 to run anything", code="bad_formation")
    store.set_formation(app, body.model_dump_json())
    if request.app.state.reconciler is not None:
        request.app.state.reconciler.poke()
    return body


@router.get("/ps")
def process_list(app: str, store: StoreDep, request: Request) -> ProcessList:
    store.get_app(app)
    reconciler = reconciler_of(request)
    state = reconciler.last_status.get(app)
    formation = effective_formation(store, app)
    if state is None:
        return ProcessList(
            app=app, release=None, status="STOPPED", formation=formation, url=app_url(request, app),
            message="no release runs yet: kiln deploy" if formation.max_replicas else "scaled to 0",
        )  # fmt: skip
    now = time.time()
    gpus = _gpu_use(request, reconciler, app)
    replicas = [
        ReplicaInfo(
            replica=r.replica_id,
            state=r.state,
            node=r.node_ip,
            pid=r.pid,
            uptime_s=round(now - r.start_time_s, 1) if r.start_time_s else None,
            gpus=gpus.get(f"dyno.{r.replica_id[:6]}", []),
        )
        for r in state.replicas
    ]
    message = state.deployment_message or state.message
    return ProcessList(
        app=app, release=state.release, status=state.status, message=message.strip()[:2000],
        formation=formation, replicas=replicas, url=app_url(request, app),
    )  # fmt: skip


def _gpu_use(request: Request, reconciler: Reconciler, app: str) -> dict[str, list[ReplicaGpu]]:
    """For an app whose replicas reserve GPUs: what its dynos use, from NVML on every node (a
    driver on each node, cached a few seconds). Nothing, rather than an error, if NVML can't say."""
    applied = (reconciler.applied or {}).get("applications", [])
    options = [
        d.get("ray_actor_options", {})
        for a in applied
        if a["name"] == app
        for d in a["deployments"]
    ]
    if not any(o.get("num_gpus") for o in options):
        return {}
    try:
        return gpus_by_dyno(request.app.state.gpus.inventory(), app)
    except KilnError:
        return {}
