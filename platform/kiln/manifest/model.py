"""The ``kiln.toml`` manifest as pydantic models: every field typed and described.

>>> Manifest.model_validate({"name": "echo", "scaling": {"min_replicas": 0}}).scaling.min_replicas
0

The JSON Schema that ``kiln manifest:schema`` prints comes from these models, and nothing else.
"""

from __future__ import annotations

__all__ = ["AddonKind", "Health", "Llm", "LlmEngine", "Manifest", "Resources", "Runtime", "Scaling"]

import enum
import re
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from kiln import names
from kiln.errors import InvalidInput
from kiln.manifest.units import GPU_HELP, SIZE_HELP, GpuSpec, Memory, ModelRef, parse_duration


class Runtime(enum.StrEnum):
    """Kiln's runtimes (its buildpacks): each turns a kind of app into something that serves HTTP."""

    PYTHON = "python"
    MODEL = "model"
    LLM = "llm"
    EMBEDDINGS = "embeddings"


# The runtimes whose dyno a warm spare can stand in for (kiln_runtime.spare): their slow imports
# are known, and importing them runs none of the app's code.
SPARE_RUNTIMES = frozenset({Runtime.LLM, Runtime.EMBEDDINGS})


class AddonKind(enum.StrEnum):
    """Managed add-ons an app can attach."""

    API_KEYS = "api-keys"
    VECTOR_STORE = "vector-store"


def _check_app_name(value: object) -> object:
    if isinstance(value, str):
        try:
            names.app_name(value)
        except Exception as exc:  # names raises KilnError; pydantic wants ValueError
            raise ValueError(str(exc)) from None
    return value


def _parse_gpus(value: object) -> tuple[GpuSpec, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, GpuSpec)):
        return (GpuSpec.parse(value),)
    if isinstance(value, (list, tuple)):
        specs = []
        for index, item in enumerate(value):
            try:
                specs.append(GpuSpec.parse(item))
            except ValueError as exc:
                raise ValueError(f"item {index}: {exc}") from None
        return tuple(specs)
    raise ValueError(f"must be {GPU_HELP}, or a list of them in order of preference")


def _stringify_env(value: object) -> object:
    """TOML gives ints, floats and bools for unquoted values; a dyno's environment wants strings."""
    if not isinstance(value, dict):
        return value
    out: dict[object, object] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif isinstance(item, (int, float)):
            out[key] = str(item)
        else:
            out[key] = item
    return out


def _check_env_key(value: object) -> object:
    if isinstance(value, str):
        try:
            names.config_key(value)
        except Exception as exc:
            raise ValueError(str(exc)) from None
    return value


MemoryField = Annotated[
    Memory,
    BeforeValidator(Memory.parse),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "description": SIZE_HELP, "examples": ["512Mi", "4Gi"]}),
]
GpuField = Annotated[
    tuple[GpuSpec, ...],
    BeforeValidator(_parse_gpus),
    PlainSerializer(lambda specs: [str(s) for s in specs], return_type=list[str]),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "examples": ["H100", "H100:2", "any:0.5"]},
                {"type": "array", "items": {"type": "string"}, "examples": [["H100", "A100:2"]]},
            ],
            "description": GPU_HELP,
        }
    ),
]
ModelField = Annotated[
    ModelRef,
    BeforeValidator(ModelRef.parse),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["Qwen/Qwen2.5-0.5B-Instruct@main"]}),
]
EnvKey = Annotated[str, BeforeValidator(_check_env_key)]

_ENTRYPOINT = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Section):
    """What one replica (dyno) needs from its node."""

    cpu: float = Field(1.0, gt=0, le=512, description="CPU cores per replica (fractions allowed).")
    memory: MemoryField | None = Field(
        None, description='Memory per replica, e.g. "4Gi"; Ray reserves it on the node.'
    )
    gpu: GpuField = Field(
        (),
        description=(
            'GPUs per replica: "H100", "H100:2", "any:0.5" (a fraction shares one GPU), or a list '
            "of acceptable specs in order of preference. Empty: CPU only."
        ),
    )
    gpu_memory: MemoryField | None = Field(
        None,
        description="GPU memory one replica needs; fractional replicas are only packed onto a GPU "
        "with this much free.",
    )


class Scaling(_Section):
    """How many replicas run, and how Ray Serve's autoscaler moves between them."""

    min_replicas: int = Field(1, ge=0, le=1000, description="Fewest replicas; 0 = scale to zero.")
    max_replicas: int = Field(
        1,
        le=1000,
        json_schema_extra={"minimum": 1},
        description="Most replicas the autoscaler may run; at least 1 and at least min_replicas.",
    )
    target_ongoing_requests: float = Field(
        2.0, gt=0, description="Requests in flight per replica the autoscaler aims for."
    )
    upscale_delay_s: float = Field(
        1.0, ge=0, description="Seconds load must stay high before replicas are added."
    )
    downscale_delay_s: float = Field(
        60.0, ge=0, description="Seconds load must stay low before replicas are removed."
    )
    downscale_to_zero_delay_s: float | None = Field(
        None,
        ge=0,
        description="Seconds without requests before the last replica stops (when min_replicas "
        "is 0); defaults to downscale_delay_s.",
    )
    max_ongoing_requests: int = Field(
        8, ge=1, description="Requests one replica handles at once; more wait in the queue."
    )
    max_queued_requests: int | None = Field(
        1000,
        ge=1,
        description="Requests that may wait for a replica (while scaling from zero, all of them) "
        "before new ones get 503 with Retry-After.",
    )
    warm_spare: bool = Field(
        False,
        description="Keep one started process of the model runtime (llm with the transformers "
        "engine, embeddings; slugs) on each node the app ran on, its libraries imported, for the "
        "next replica there: a cold start skips importing torch and transformers (seconds). It "
        "holds their memory while idle (about 400 MB) and leaves after 15 minutes unused.",
    )

    @field_validator("max_replicas")
    @classmethod
    def _max_at_least_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_replicas")
        if isinstance(low, int) and low >= 1 and value < low:
            raise ValueError(f"must be >= scaling.min_replicas ({low})")
        if value < 1:
            raise ValueError("must be >= 1 (use min_replicas = 0 to scale to zero)")
        return value


class Health(_Section):
    """How the platform knows a dyno is ready and still alive."""

    path: str = Field(
        "/healthz",
        pattern=r"^/[^\s]*$",
        description="HTTP path that answers 200 once the dyno is ready to serve.",
    )
    startup_timeout_s: float = Field(
        600.0,
        gt=0,
        description="Seconds a new dyno may take to become ready before the release fails.",
    )
    period_s: float = Field(
        2.0, gt=0, description="Seconds between health checks of a running dyno."
    )
    timeout_s: float = Field(10.0, gt=0, description="Seconds one health check may take.")


def _seconds(value: object) -> object:
    if isinstance(value, str):
        try:
            return parse_duration(value, "rollout.auto")
        except InvalidInput:
            raise ValueError('must be a duration like "90s", "10m" or "1h"') from None
    return value


DurationField = Annotated[
    float,
    BeforeValidator(_seconds),
    Field(gt=0),
    WithJsonSchema({"anyOf": [{"type": "string", "examples": ["10m", "1h"]},
                              {"type": "number", "description": "seconds"}]}),
]  # fmt: skip


class Http(_Section):
    """How long the app may take over a request."""

    timeout: float = Field(
        300.0,
        gt=0,
        le=3600,
        description="Seconds a request may wait for the app's answer to begin, and then between "
        "two chunks of it (a stream that keeps sending is never cut); past it, 504.",
    )


class Rollout(_Section):
    """How a new release takes over: all at once (the default), or as a canary first."""

    canary: int | None = Field(
        None,
        ge=1,
        le=99,
        description="Percent of the app's replicas (at least one) that run a new release first, in "
        "place, while the rest keep serving the previous one: no extra GPUs. kiln deploy "
        "--canary N does the same for one deploy.",
    )
    auto: DurationField | None = Field(
        None,
        description='Promote the canary after this long ("10m") if its error rate and p95 stay '
        "within bounds of the previous release's, and abort it at once if they leave them; "
        "unset: kiln canary:promote or canary:abort decides.",
    )
    max_error_increase: float = Field(
        2.0,
        ge=0,
        le=100,
        description="Percentage points the canary's rate of 5xx answers may exceed the previous "
        "release's.",
    )
    max_p95_ratio: float = Field(
        1.5,
        ge=1,
        description="How many times the previous release's p95 latency (plus 50 ms) the "
        "canary's may reach.",
    )
    min_requests: int = Field(
        20, ge=1, description="Requests the canary serves before its error rate and p95 count."
    )


class LlmEngine(enum.StrEnum):
    """What generates tokens in an llm app's dyno."""

    AUTO = "auto"
    VLLM = "vllm"
    TRANSFORMERS = "transformers"


_SERVED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Flags Kiln sets itself from kiln.toml and the dyno's place; engine_args may not set them.
KILN_ENGINE_ARGS = frozenset({
    "model", "served_model_name", "host", "port", "uds", "api_key", "lora_modules",
    "enable_lora", "max_model_len", "tensor_parallel_size", "middleware", "revision",
    "download_dir", "ssl_keyfile", "ssl_certfile", "root_path", "config", "headless", "grpc",
    "api_server_count",
})  # fmt: skip


class Llm(_Section):
    """How an ``llm`` app serves its model."""

    engine: LlmEngine = Field(
        LlmEngine.AUTO,
        description='"vllm" (vLLM\'s OpenAI server: paged KV cache, prefix caching, LoRA '
        'adapters), "transformers" (Kiln\'s small engine, few dependencies) or "auto": vLLM '
        "where the app's environment has it, else transformers.",
    )
    max_model_len: int | None = Field(
        None, ge=16, le=1 << 21, description="Longest prompt plus answer, in tokens (vLLM)."
    )
    adapters: dict[str, ModelField] = Field(
        default_factory=dict,
        description='LoRA adapters by the model name requests use: { sql = "org/sql-lora@main" }; '
        "fetched in the release phase like the model (vLLM).",
    )
    engine_args: dict[str, str | int | float | bool | list[str]] = Field(
        default_factory=dict,
        description="More of vLLM's engine arguments, by name: { enable_prefix_caching = true }.",
    )

    @field_validator("adapters")
    @classmethod
    def _adapter_names(cls, value: dict[str, ModelRef]) -> dict[str, ModelRef]:
        for name in value:
            if not _SERVED_NAME.fullmatch(name):
                raise ValueError(
                    f"adapter name {name!r} must be 1-64 letters, digits, '.', '_' or '-' (it is "
                    "the model name requests use)"
                )
        return value

    @field_validator("engine_args")
    @classmethod
    def _engine_args(cls, value: dict[str, object]) -> dict[str, object]:
        for key in value:
            name = key.replace("-", "_")
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"{key!r} is not an engine argument's name (like max_num_seqs)")
            if name in KILN_ENGINE_ARGS:
                raise ValueError(
                    f"{key!r} is set by Kiln (from model, [llm] and [resources]); remove it "
                    "from engine_args"
                )
            item = value[key]
            for part in item if isinstance(item, list) else [item]:
                if isinstance(part, str) and part.startswith("-"):
                    raise ValueError(
                        f"{key} = {part!r}: a value may not start with '-' (it would be read "
                        "as another argument)"
                    )
        return value


class Manifest(_Section):
    """An app's ``kiln.toml``: what it is, how to build it, what it needs, how it scales."""

    name: Annotated[str | None, BeforeValidator(_check_app_name)] = Field(
        None, description=f"The app's name ({names.APP_NAME_RULE}); `-a APP` can give it instead."
    )
    runtime: Runtime | None = Field(
        None, description="Which runtime builds and serves the app; detected when left out."
    )
    entrypoint: str | None = Field(
        None,
        description='What the runtime serves, as "module:attribute": an ASGI/WSGI app '
        '("main:app") or a model class ("model:Model").',
    )
    requirements: str | None = Field(
        None,
        description="The Python dependency file, relative to the app: requirements.txt or "
        "pyproject.toml; detected when left out.",
    )
    model: ModelField | None = Field(
        None, description='Hugging Face model the app serves: "org/name" with optional "@revision".'
    )
    addons: list[AddonKind] = Field(
        default_factory=list, description="Add-ons to attach when the app is created."
    )
    base_image: str | None = Field(
        None,
        min_length=1,
        description="Base image for this app's OCI image (overrides the platform's default).",
    )
    release: str | None = Field(
        None,
        min_length=1,
        description="A command run once per release before traffic moves (migrations, warm-up).",
    )
    resources: Resources = Field(default_factory=Resources, description="What each replica needs.")
    scaling: Scaling = Field(default_factory=Scaling, description="Replica counts and autoscaling.")
    health: Health = Field(default_factory=Health, description="Readiness and liveness checks.")
    rollout: Rollout = Field(default_factory=Rollout, description="How new releases take over.")
    http: Http = Field(default_factory=Http, description="Time limits of requests.")
    llm: Llm = Field(default_factory=Llm, description="How an llm app serves its model.")
    env: dict[EnvKey, str] = Field(
        default_factory=dict,
        description="Non-secret environment defaults; config vars (kiln config:set) override them.",
    )

    @field_validator("env", mode="before")
    @classmethod
    def _env_strings(cls, value: object) -> object:
        return _stringify_env(value)

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_form(cls, value: str | None) -> str | None:
        if value is not None and not _ENTRYPOINT.fullmatch(value):
            raise ValueError('must be "module:attribute", e.g. "main:app" or "model:Model"')
        return value

    @field_validator("requirements")
    @classmethod
    def _requirements_inside(cls, value: str | None) -> str | None:
        if value is None:
            return value
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or not value.strip():
            raise ValueError("must be a path inside the app, e.g. requirements.txt")
        return value

    @field_validator("addons")
    @classmethod
    def _addons_once(cls, value: list[AddonKind]) -> list[AddonKind]:
        seen = [a for i, a in enumerate(value) if a in value[:i]]
        if seen:
            raise ValueError(f"lists {seen[0].value} twice; each add-on attaches once")
        return value

    @model_validator(mode="after")
    def _spare_fits(self) -> Manifest:
        if not self.scaling.warm_spare:
            return self
        if self.runtime is not None and self.runtime not in SPARE_RUNTIMES:
            raise ValueError(
                f"scaling.warm_spare is for the llm and embeddings runtimes (their imports are "
                f'known and run no app code); this app\'s runtime is "{self.runtime}"'
            )
        if self.runtime in (None, Runtime.LLM) and self.llm.engine is LlmEngine.VLLM:
            raise ValueError(
                "scaling.warm_spare is for the transformers engine: vLLM's server is a process "
                "of its own that a spare cannot start ahead; remove warm_spare, or set [llm] "
                'engine = "transformers" (with "auto", an app that has vLLM starts no spare)'
            )
        return self

    @model_validator(mode="after")
    def _llm_fits(self) -> Manifest:
        llm = self.llm
        if llm == Llm():
            return self
        if self.runtime is not None and self.runtime is not Runtime.LLM:
            raise ValueError(
                f'[llm] is for runtime = "llm"; this app\'s runtime is "{self.runtime}"'
            )
        if self.model is not None:
            repo = self.model.repo_id
            taken = [n for n in llm.adapters if n in (repo, repo.rsplit("/", 1)[-1])]
            if taken:
                raise ValueError(
                    f"[llm] adapter name {taken[0]!r} is the model's own name; requests could "
                    "not tell them apart: name the adapter otherwise"
                )
        if llm.engine is LlmEngine.TRANSFORMERS and (llm.adapters or llm.engine_args):
            what = "adapters" if llm.adapters else "engine_args"
            raise ValueError(f'[llm] {what} need engine = "vllm" (or "auto"), not "transformers"')
        return self

    def models(self) -> list[ModelRef]:
        """What the release phase fetches into the model cache: the model, then its adapters."""
        return [self.model, *self.llm.adapters.values()] if self.model is not None else []

    def to_toml_dict(self) -> dict[str, Any]:
        """The manifest as plain TOML-ready data, without unset optional values."""
        return self.model_dump(mode="json", exclude_none=True)
