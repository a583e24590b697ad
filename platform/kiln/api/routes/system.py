"""``/healthz`` (public, for liveness probes) and ``/status`` (what this control plane runs)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from kiln import __version__
from kiln.api.auth import StoreDep, require_token

public = APIRouter(tags=["system"])
router = APIRouter(tags=["system"], dependencies=[Depends(require_token)])


class Health(BaseModel):
    ok: bool = True


class Status(BaseModel):
    version: str = Field(description="Kiln's version.")
    store: str = Field(description="The store's database kind: sqlite or postgresql.")
    apps: int = Field(description="How many apps exist.")


@public.get("/healthz")
def healthz() -> Health:
    return Health()


@router.get("/status")
def platform_status(store: StoreDep) -> Status:
    return Status(version=__version__, store=store.engine.dialect.name, apps=len(store.list_apps()))
