"""What a dyno supervisor is told: the release it runs, sealed config, health and log settings.

A ``DynoSpec`` travels as the Serve application's ``args`` (JSON); config vars inside it stay
Fernet-sealed, so neither Serve's stored config nor its logs hold a secret in plaintext.
"""

from __future__ import annotations

__all__ = ["CachedModel", "DynoSpec"]

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kiln.models import Artifact
from kiln.sandbox import Sandbox


class CachedModel(BaseModel):
    """A model (or LoRA adapter) in the platform's model cache, as a dyno needs it."""

    model_config = ConfigDict(frozen=True)

    folder: str = Field(description="Its folder in the cache (models--org--name).")
    revision: str | None = Field(None, description="Branch, tag or commit; None: main.")


class DynoSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _one_model_before(cls, data: Any) -> Any:
        """A spec an older Kiln wrote (in Serve's stored config) named one model folder."""
        if isinstance(data, dict) and data.get("model_folder") and "models" not in data:
            data = {**data, "models": [{"folder": data["model_folder"],
                                        "revision": data.get("model_revision")}]}  # fmt: skip
        return data

    app: str = Field(description="The app's name.")
    release: int = Field(description="The release version these dynos run.")
    artifact: Artifact = Field(description="What to start: an image or a slug.")
    env: dict[str, str] = Field(default_factory=dict, description="Non-secret environment.")
    config_sealed: str = Field(description="The release's config vars, Fernet-sealed.")
    health_path: str = Field("/healthz", description="The dyno's readiness path.")
    startup_timeout_s: float = Field(600.0, description="How long a dyno may take to be ready.")
    health_timeout_s: float = Field(10.0, description="How long one health check may take.")
    request_timeout_s: float = Field(
        300.0, description="[http] timeout: the wait for an answer to begin, and between chunks."
    )
    stop_timeout_s: float = Field(20.0, description="SIGTERM to SIGKILL, when a dyno stops.")
    docker_host: str | None = Field(None, description="The engine that runs image dynos.")
    image_source: str | None = Field(
        None, description="The registry's name for the image: a node whose engine lacks it pulls."
    )
    log_dir: str = Field(description="Where the platform's log sink writes app logs.")
    model_cache: str | None = Field(
        None, description="The platform's model cache (Hugging Face layout), read-only for dynos."
    )
    models: tuple[CachedModel, ...] = Field(
        (),
        description="The app's model, then its LoRA adapters, in that cache: all a dyno sees "
        "of it.",
    )
    sandbox: Sandbox | None = Field(
        None, description="Where and as whom the app's code runs; None: as the supervisor does."
    )
    warm_spare: bool = Field(
        False, description="[scaling] warm_spare: leave a started runtime for the next dyno."
    )
    memory_bytes: int | None = Field(
        None, description="resources.memory: a container dyno's memory limit."
    )
    pids_limit: int = Field(
        4096, description="Most processes and threads a container dyno may run."
    )
