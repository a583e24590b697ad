"""``/healthz`` (public, for liveness probes) and ``/status`` (what this control plane runs)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from kiln import __version__
from kiln.api.deps import PlatformDep
from kiln.models import PlatformStatus
from kiln.sandbox import isolation

public = APIRouter(tags=["system"])
router = APIRouter(tags=["system"])


class Health(BaseModel):
    ok: bool = True


@public.get("/healthz")
def healthz() -> Health:
    return Health()


@router.get("/status")
def platform_status(platform: PlatformDep) -> PlatformStatus:
    store, settings = platform.store, platform.settings
    return PlatformStatus(
        version=__version__,
        store=store.engine.dialect.name,
        apps=len(store.list_apps()),
        run=platform.reconciler is not None,
        apps_url=settings.apps_url,
        isolation=isolation(settings).summary,
    )
