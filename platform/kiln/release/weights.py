"""The release phase's weight prefetch: a release's model, fetched with huggingface-hub into the
platform's model cache (Hugging Face's cache layout, ``$KILN_HOME/models``), which dynos read
with ``HF_HUB_OFFLINE=1``. Weights never go into an image or a slug.

A repository or revision the hub does not have fails the release with the hub's reason; the
running release stays.
"""

from __future__ import annotations

__all__ = ["model_cache", "prefetch"]

import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiln.builds.log import BuildFailed
from kiln.manifest import ModelRef
from kiln.settings import Settings


def model_cache(settings: Settings) -> Path:
    return settings.home / "models"


def _progress(say: Callable[[str], None]) -> type:
    """A tqdm for snapshot_download that writes to the release log at 0, 50 and 100%."""
    from tqdm.auto import tqdm

    class Progress(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["file"] = io.StringIO()  # nothing on a terminal: the log says it
            kwargs.pop("disable", None)
            super().__init__(*args, **kwargs)
            self._said = -1

        def update(self, n: float | None = 1) -> bool | None:
            shown: bool | None = super().update(n)
            if self.total:
                step = min(2, int(self.n * 2 // self.total))
                if step > self._said:
                    self._said = step
                    say(f"{self.desc or 'download'}: {step * 50}% of {self.total / 2**20:.1f} MiB")
            return shown

    return Progress


def prefetch(
    model: ModelRef,
    settings: Settings,
    token: str | None,
    step: Callable[[str], None],
    info: Callable[[str], None],
) -> str:
    """Fetch the model's files (only those not cached yet); returns the local snapshot folder."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    step(f"Release phase: fetching {model} into the model cache")
    started = time.monotonic()
    try:
        path = snapshot_download(
            model.repo_id, revision=model.revision, cache_dir=str(model_cache(settings)), token=token or False,
            tqdm_class=_progress(info), endpoint=os.environ.get("HF_ENDPOINT") or None,
        )  # fmt: skip
    except RevisionNotFoundError as exc:
        raise BuildFailed(
            f"the model {model.repo_id} has no revision {model.revision!r} on the hub: {_first(exc)}",
            code="model_not_found",
        ) from None
    except GatedRepoError as exc:
        raise BuildFailed(
            f"the model {model.repo_id} is gated: {_first(exc)}; give the app a token with access: "
            "kiln config:set HF_TOKEN=hf_...",
            code="model_gated",
        ) from None
    except RepositoryNotFoundError as exc:
        raise BuildFailed(
            f"the model {model.repo_id} was not found on the hub ({constants.ENDPOINT}): {_first(exc)}",
            code="model_not_found",
        ) from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise BuildFailed(
            f"could not fetch {model} from {constants.ENDPOINT}: {_first(exc)}",
            code="model_fetch_failed",
        ) from None
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    info(
        f"{len(files)} files, {size / 2**20:.1f} MiB, snapshot {Path(path).name[:12]}, in {time.monotonic() - started:.1f}s"
    )
    return str(path)


def _first(exc: Exception) -> str:
    """The hub's reason: its status line and the sentence after it ("Repository Not Found ...")."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(lines[:2]) or type(exc).__name__
