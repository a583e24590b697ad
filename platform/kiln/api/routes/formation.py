"""``/apps/{app}/formation`` (``kiln scale``/``autoscale``) and ``/apps/{app}/ps``."""

from __future__ import annotations

import time

from fastapi import APIRouter

from kiln.api.deps import GpusDep, ReconcilerDep, ReleaserDep, SettingsDep, StoreDep
from kiln.errors import InvalidInput, KilnError
from kiln.gpu.cluster import GpuCluster
from kiln.gpu.inventory import gpus_by_dyno
from kiln.manifest import Manifest
from kiln.models import Formation, ProcessList, ReplicaGpu, ReplicaInfo
from kiln.run.engine_metrics import latest, llm_apps
from kiln.run.reconciler import Reconciler

router = APIRouter(prefix="/apps/{app}", tags=["formation"])


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
def set_formation(app: str, body: Formation, releaser: ReleaserDep) -> Formation:
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
    releaser.set_formation(app, body.model_dump_json())
    return body


@router.get("/ps")
def process_list(
    app: str, store: StoreDep, reconciler: ReconcilerDep, gpus: GpusDep, settings: SettingsDep
) -> ProcessList:
    store.get_app(app)
    url = f"{settings.apps_url}/{app}/"
    state = reconciler.last_status.get(app)
    formation = effective_formation(store, app)
    if state is None:
        return ProcessList(
            app=app, release=None, status="STOPPED", formation=formation, url=url,
            message="no release runs yet: kiln deploy" if formation.max_replicas else "scaled to 0",
        )  # fmt: skip
    now = time.time()
    used = _gpu_use(gpus, reconciler, app)
    item = [d for d in store.deployables() if d.app == app]
    engines = latest(settings.log_dir, app, now) if llm_apps(item) else {}
    replicas = [
        ReplicaInfo(
            replica=r.replica_id,
            state=r.state,
            node=r.node_ip,
            pid=r.pid,
            uptime_s=round(now - r.start_time_s, 1) if r.start_time_s else None,
            gpus=used.get(f"dyno.{r.replica_id[:6]}", []),
            engine=engines.get(f"dyno.{r.replica_id[:6]}"),
        )
        for r in state.replicas
    ]
    message = state.deployment_message or state.message
    waiting = reconciler.waiting.get(app)
    if waiting and any(r.state != "RUNNING" for r in state.replicas):
        message = f"{waiting}. {message}"
    return ProcessList(
        app=app, release=state.release, status=state.status, message=message.strip()[:2000],
        formation=formation, replicas=replicas, url=url,
    )  # fmt: skip


def _gpu_use(gpus: GpuCluster, reconciler: Reconciler, app: str) -> dict[str, list[ReplicaGpu]]:
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
        return gpus_by_dyno(gpus.inventory(), app)
    except KilnError:
        return {}
