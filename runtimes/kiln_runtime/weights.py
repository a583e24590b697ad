"""Where a dyno finds its model: in the platform's model cache (Hugging Face's layout), fetched
there in the release phase; dynos run with ``HF_HUB_OFFLINE=1``, so a cold start never downloads."""

from __future__ import annotations

__all__ = ["model_path"]

import os
from pathlib import Path


def model_path(reference: str | None = None) -> str:
    """The local folder of ``org/name[@revision]`` (default ``$KILN_MODEL``), or a folder path."""
    reference = reference or os.environ.get("KILN_MODEL", "")
    if not reference:
        raise RuntimeError('no model: set model = "org/name" in kiln.toml (KILN_MODEL is empty)')
    if Path(reference).is_dir():
        return reference
    from huggingface_hub import snapshot_download

    repo_id, _, revision = reference.partition("@")
    try:
        return snapshot_download(
            repo_id,
            revision=revision or None,
            local_files_only=True,
            cache_dir=os.environ.get("HF_HUB_CACHE"),
        )
    except Exception as exc:
        raise RuntimeError(
            f"{reference} is not in the model cache ({os.environ.get('HF_HUB_CACHE', 'HF_HUB_CACHE unset')}): "
            f"{type(exc).__name__}; the release phase fetches it, so deploy again or check kiln logs --source release"
        ) from None
