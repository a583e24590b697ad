"""``/gc``: garbage collection (``kiln gc``): what no kept release needs any more."""

from __future__ import annotations

from fastapi import APIRouter

from kiln.api.deps import ReleaserDep
from kiln.models import GcReport

router = APIRouter(tags=["gc"])


@router.post("/gc")
def gc(releaser: ReleaserDep, dry_run: bool = False) -> GcReport:
    """Old slugs, virtualenvs and images of each app (past KILN_KEEP_RELEASES), unused models,
    destroyed apps' leftovers, stopped builds' scratch; ``dry_run`` only lists them."""
    return releaser.collect(dry_run=dry_run)
