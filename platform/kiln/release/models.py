"""The model cache's contents: which models, how big, which apps use them; pruning the rest."""

from __future__ import annotations

__all__ = ["cached_models"]


from kiln.manifest import Manifest
from kiln.models import CachedModel
from kiln.release.weights import model_cache
from kiln.settings import Settings
from kiln.store import Store


def _in_use(store: Store) -> dict[str, list[str]]:
    users: dict[str, list[str]] = {}
    for item in store.deployables():
        if item.manifest:
            for model in Manifest.model_validate_json(item.manifest).models():
                users.setdefault(model.repo_id, []).append(item.app)
    return users


def cached_models(store: Store, settings: Settings) -> list[CachedModel]:
    from huggingface_hub import scan_cache_dir

    cache = model_cache(settings)
    if not cache.exists():
        return []
    users = _in_use(store)
    return [
        CachedModel(
            repo_id=repo.repo_id,
            size=repo.size_on_disk,
            revisions=sorted(r.commit_hash[:12] for r in repo.revisions),
            used_by=sorted(users.get(repo.repo_id, [])),
        )
        for repo in sorted(scan_cache_dir(cache).repos, key=lambda r: r.repo_id)
        if repo.repo_type == "model"
    ]
