"""``/models``: the platform's model cache (``kiln models``, ``kiln models:prune``)."""

from __future__ import annotations

from fastapi import APIRouter

from kiln.api.deps import ReleaserDep, SettingsDep, StoreDep
from kiln.models import CachedModel, GcReport
from kiln.release.models import cached_models

router = APIRouter(prefix="/models", tags=["models"])


@router.get("")
def list_models(store: StoreDep, settings: SettingsDep) -> list[CachedModel]:
    return cached_models(store, settings)


@router.post("/prune")
def prune_models(releaser: ReleaserDep, dry_run: bool = False) -> GcReport:
    """Remove cached models no kept release serves (each app's last KILN_KEEP_RELEASES, the
    running ones, a canary, a deploy in progress); say which were kept and why."""
    return releaser.collect(models_only=True, dry_run=dry_run)
