"""``/apps/{app}/metrics`` (``kiln metrics``): the app's requests over a window, from the lines
its routers logged: rate, status classes, latency percentiles, per release."""

from __future__ import annotations

import time

from fastapi import APIRouter, Query, Request

from kiln.api.deps import SettingsDep, StoreDep, get_platform
from kiln.models import RequestSummary
from kiln.route.figures import summarize
from kiln.run.logs import records_since

router = APIRouter(prefix="/apps/{app}", tags=["metrics"])


@router.get("/metrics")
def app_metrics(
    app: str, store: StoreDep, settings: SettingsDep, request: Request,
    since_s: float = Query(3600, gt=0, le=7 * 86400, description="The window, in seconds."),
) -> RequestSummary:  # fmt: skip
    store.get_app(app)
    records = records_since(settings.log_dir, app, time.time() - since_s)
    total, releases = summarize(records, since_s)
    reconciler = get_platform(request).reconciler  # None where this plane runs no apps
    state = reconciler.last_status.get(app) if reconciler is not None else None
    running = sum(r.state == "RUNNING" for r in state.replicas) if state is not None else 0
    return RequestSummary(app=app, since_s=since_s, total=total, releases=releases,
                          replicas=running)  # fmt: skip
