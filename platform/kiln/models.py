"""The records every stage shares: what the store returns, the API sends and the CLI shows.

Each is a pydantic model with described fields, so the OpenAPI document and the CLI's ``--json``
output come from one definition.
"""

from __future__ import annotations

__all__ = [
    "AddonCreate",
    "AddonInfo",
    "ApiKeyCreate",
    "ApiKeyInfo",
    "AppCreate",
    "AppInfo",
    "Artifact",
    "ArtifactKind",
    "BuildEvent",
    "BuildInfo",
    "BuildStatus",
    "CachedModel",
    "CanaryFigures",
    "CanaryInfo",
    "CanaryPart",
    "ConfigChange",
    "ConfigUpdate",
    "Deployment",
    "ErrorBody",
    "ErrorDetail",
    "Formation",
    "GcItem",
    "GcReport",
    "GpuInfo",
    "GpuProcess",
    "KeyRule",
    "LogRecord",
    "LogSource",
    "NewApiKey",
    "NewToken",
    "NodeInventory",
    "PlatformStatus",
    "ProcessList",
    "ReleaseInfo",
    "ReleaseStatus",
    "ReplicaInfo",
    "RollbackRequest",
    "TokenCreate",
    "TokenInfo",
    "TokenScope",
]

import enum
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from kiln.manifest.model import AddonKind


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


class ReleaseStatus(enum.StrEnum):
    PENDING = "pending"  # being rolled out (or, with a canary share, its canary starting)
    CANARY = "canary"  # serving its share of the app's replicas, beside the previous release
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ErrorDetail(BaseModel):
    code: str = Field(description="A stable identifier for the kind of error.")
    message: str = Field(description="What was wrong, where, and what to do next.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class ArtifactKind(enum.StrEnum):
    IMAGE = "image"
    SLUG = "slug"


class Artifact(_Record):
    """What a build produced and a dyno runs: an OCI image, or a slug directory."""

    kind: ArtifactKind = Field(
        description="image (OCI, via a Docker API engine) or slug (venv + app)."
    )
    reference: str = Field(description="The image tag, or the slug's directory.")
    digest: str = Field(description="The image id, or the slug's content digest.")
    runtime: str = Field(description="The runtime that built it.")
    command: list[str] = Field(description="The dyno's command line.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment the runtime needs.")


class BuildStatus(enum.StrEnum):
    BUILDING = "building"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class BuildInfo(_Record):
    id: int = Field(description="The build's number, unique across the platform.")
    app: str = Field(description="The app it builds.")
    status: BuildStatus = Field(description="building, succeeded or failed.")
    source_digest: str | None = Field(None, description="SHA-256 of the source tree.")
    commit: str | None = Field(None, description="The git commit built, for git pushes.")
    runtime: str | None = Field(None, description="The runtime that built it.")
    artifact: Artifact | None = Field(None, description="What it produced, when it succeeded.")
    error: str | None = Field(None, description="Why it failed.")
    release: int | None = Field(None, description="The release it created.")
    actor: str = Field("", description="Who started it.")
    created_at: datetime
    finished_at: datetime | None = None
    duration_s: float | None = Field(None, description="Seconds from start to finish.")


class BuildEvent(BaseModel):
    """One line of ``POST /apps/{app}/builds``'s NDJSON stream: a log line, then the result."""

    line: str | None = Field(None, description="A line of the build log, as it is written.")
    build: BuildInfo | None = Field(None, description="The finished build (last event).")
    error: ErrorDetail | None = Field(None, description="Why the build could not start.")


class Formation(_Record):
    """How many replicas an app runs: fixed (``kiln scale``) or autoscaled (``kiln autoscale``)."""

    min_replicas: int = Field(ge=0, le=1000, description="Fewest replicas; 0 scales to zero.")
    max_replicas: int = Field(ge=0, le=1000, description="Most replicas.")
    target_ongoing_requests: float | None = Field(
        None, gt=0, description="In-flight requests per replica the autoscaler aims for."
    )

    @property
    def fixed(self) -> bool:
        return self.min_replicas == self.max_replicas


class ReplicaGpu(_Record):
    """A GPU one dyno uses, as NVML on its node sees it."""

    uuid: str
    name: str = Field(description='e.g. "NVIDIA H100 80GB HBM3".')
    memory_used: int = Field(description="Bytes of this GPU's memory the dyno's processes hold.")
    memory_total: int = Field(description="The GPU's memory, bytes.")
    utilization: int | None = Field(
        None, description="Percent of time a kernel ran on this GPU (every process on it)."
    )


class LlmFigures(_Record):
    """What one dyno's engine is doing, from its last two reports."""

    at: float = Field(description="Unix time of the latest report.")
    running: int = Field(description="Requests being generated.")
    waiting: int = Field(description="Requests queued in the engine.")
    kv_cache_percent: float = Field(description="KV cache in use, percent.")
    tokens_per_s: float | None = Field(
        None, description="Tokens generated per second between the last two reports."
    )
    ttft_ms: float | None = Field(
        None, description="Mean time to first token between the last two reports (or overall)."
    )
    requests: int = Field(description="Requests finished since the dyno started.")
    raw: dict[str, float] = Field(default_factory=dict, description="The latest report.")


class RequestFigures(_Record):
    """Requests an app answered in a window: how many, their status classes and latency."""

    release: int | None = Field(None, description="The release that answered; None: all.")
    requests: int = Field(description="Answers in the window.")
    per_s: float = Field(description="Requests per second over the window.")
    status: dict[str, int] = Field(
        default_factory=dict, description='Answers by status class: {"2xx": 10, "5xx": 1}.'
    )
    p50_ms: float | None = Field(None, description="Median latency to the whole answer.")
    p95_ms: float | None = None
    p99_ms: float | None = None
    first_chunk_p50_ms: float | None = Field(
        None,
        description="Median time to the first event of streamed answers (an LLM's first token).",
    )
    held: int = Field(0, description="Requests that waited in a replica for its dyno to serve.")
    cold_starts: int = Field(0, description="Replicas that started in the window.")


class RequestSummary(_Record):
    """``kiln metrics``: an app's requests over a window, from its routers' lines."""

    app: str
    since_s: float = Field(description="The window: this many seconds up to now.")
    total: RequestFigures
    releases: list[RequestFigures] = Field(
        default_factory=list, description="The same, per release that answered, newest first."
    )
    replicas: int = Field(0, description="Replicas running now.")


class ReplicaInfo(_Record):
    replica: str = Field(description="The replica's id (its dyno is dyno.<first 6 chars>).")
    state: str = Field(description="STARTING, RUNNING, STOPPING, ... as Ray Serve reports it.")
    node: str | None = Field(None, description="The node's IP address.")
    pid: int | None = Field(None, description="The supervisor's process id on that node.")
    uptime_s: float | None = Field(None, description="Seconds since the replica started.")
    gpus: list[ReplicaGpu] = Field(
        default_factory=list, description="The GPUs its dyno uses (apps that reserve GPUs)."
    )
    engine: LlmFigures | None = Field(
        None, description="Its LLM engine's figures (vLLM dynos), from the last minute."
    )


class ProcessList(_Record):
    """``kiln ps``: what runs for an app right now."""

    app: str
    release: int | None = Field(None, description="The release being run (or rolled out).")
    status: str = Field(description="The Serve application's status, or STOPPED.")
    message: str = Field("", description="Why replicas are pending or failing, if they are.")
    formation: Formation = Field(description="The replica counts in force.")
    replicas: list[ReplicaInfo] = Field(default_factory=list)
    url: str = Field(description="Where the app answers.")

    @property
    def running(self) -> int:
        """Replicas that serve now."""
        return sum(r.state == "RUNNING" for r in self.replicas)


class AddonInfo(_Record):
    name: str = Field(description="The add-on's name on the app (its kind, or --as NAME).")
    kind: AddonKind = Field(description="api-keys or vector-store.")
    created_at: datetime
    config_vars: list[str] = Field(default_factory=list, description="Config vars it injects.")
    status: str = Field("ready", description="What its provider says of it.")


class AddonCreate(BaseModel):
    kind: AddonKind = Field(description="api-keys or vector-store.")
    name: str | None = Field(None, description="Name on the app; default: the kind.")


class ApiKeyCreate(BaseModel):
    name: str = Field("default", min_length=1, max_length=100, description="What the key is for.")
    expires_in_s: float | None = Field(None, gt=0, description="Seconds until it stops working.")
    rate_per_s: float | None = Field(None, gt=0, description="Requests per second it may make.")


class ApiKeyInfo(_Record):
    id: int
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it.")
    created_at: datetime
    expires_at: datetime | None = None
    rate_per_s: float | None = None
    revoked: bool = False
    last_used_at: datetime | None = None
    requests: int = Field(0, description="Requests made with it (counted by the dynos).")


class NewApiKey(ApiKeyInfo):
    key: str = Field(description="The key itself; shown this once and never stored.")


class KeyRule(_Record):
    """What a replica needs to check one key: never the key, only its digest."""

    id: int
    digest: str
    expires_at: float | None = Field(None, description="Unix time after which it fails.")
    rate_per_s: float | None = None


class RollbackRequest(BaseModel):
    version: int | None = Field(
        None, description="The release to return to; default: the last good one before now."
    )


class AppInfo(_Record):
    name: str = Field(description="The app's name; also its URL path.")
    created_at: datetime = Field(description="When the app was created (UTC).")
    release: int | None = Field(None, description="The newest release's version number.")
    url: str | None = Field(None, description="Where the app answers, once it runs.")


class ReleaseInfo(_Record):
    version: int = Field(description="The release number: v1, v2, ... in order.")
    description: str = Field(description="What this release changed.")
    status: ReleaseStatus = Field(
        description="pending (being rolled out), canary (serving its share beside the previous "
        "release), succeeded (went live) or failed (never became healthy, or its canary was "
        "aborted; the previous release kept serving)."
    )
    status_message: str | None = Field(
        None, description="Why it failed, with the dyno's last lines."
    )
    actor: str = Field(description="Who made it: the platform token's name.")
    created_at: datetime = Field(description="When it was made (UTC).")
    config_keys: list[str] = Field(
        default_factory=list, description="Names of the config vars it carries (never values)."
    )
    build: int | None = Field(None, description="The build whose artifact it runs.")
    commit: str | None = Field(None, description="The git commit that build was made from.")
    artifact: Artifact | None = Field(None, description="What it runs; none before a first deploy.")
    canary: int | None = Field(None, description="The percent of replicas it was canaried on.")


class TokenScope(enum.StrEnum):
    """What a platform token may do. ``deploy`` and ``read`` are limited to the token's apps."""

    ADMIN = "admin"  # everything: every app, tokens, creating and destroying apps, the cluster
    DEPLOY = "deploy"  # its apps: push, deploy, config, scale, keys, add-ons, logs, rollback
    READ = "read"  # its apps: look (apps:info, releases, ps, builds, logs), change nothing


class TokenInfo(_Record):
    id: int = Field(description="The token's id, used to revoke it.")
    name: str = Field(description="What the token is for.")
    prefix: str = Field(description="The token's first characters, to recognise it.")
    created_at: datetime
    last_used_at: datetime | None = Field(None, description="Last authenticated request (UTC).")
    scope: TokenScope = Field(TokenScope.ADMIN, description="What the token may do.")
    apps: list[str] = Field(
        default_factory=list, description="The apps a deploy or read token is for (admin: all)."
    )
    expires_at: datetime | None = Field(None, description="When it stops working (UTC).")


class NewToken(TokenInfo):
    token: str = Field(description="The secret itself; shown this once and never stored.")


class AppCreate(BaseModel):
    name: str = Field(description="Name for the new app.")
    public: bool = Field(
        False, description="Serve without API keys (no api-keys add-on), like a public demo."
    )


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="What the token is for.")
    scope: TokenScope = Field(TokenScope.ADMIN, description="What the token may do.")
    apps: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="The apps a deploy or read token is for; an admin token takes none.",
    )
    expires_in_s: float | None = Field(None, gt=0, description="Seconds until it stops working.")


class Deployment(_Record):
    """What the run stage should run for one app (the store's answer to the reconciler)."""

    app: str
    sandbox_id: int = Field(0, description="Numbers the app's sandbox (its uid comes from it).")
    release: int
    status: ReleaseStatus
    artifact: Artifact
    config_sealed: str = Field(repr=False)
    manifest: str | None = Field(None, description="The manifest's JSON, from the build.")
    formation: str | None = Field(None, description="The formation's JSON, if one was set.")
    canary: CanaryPart | None = Field(
        None, description="A newer release on a share of the replicas (this one is the rest)."
    )


class CanaryPart(_Record):
    """A canary: a release that runs on ``share`` percent of an app's replicas."""

    release: int
    status: ReleaseStatus
    share: int = Field(description="Percent of the app's replicas, at least one.")
    artifact: Artifact
    config_sealed: str = Field(repr=False)
    manifest: str | None = None
    started_at: datetime | None = Field(None, description="When its share went live.")


class ConfigUpdate(BaseModel):
    """Config vars to change: a string sets a var, ``null`` removes it (as Heroku's API does)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"HF_TOKEN": "hf_x", "OLD": None}]})

    vars: dict[str, str | None] = Field(description="Names mapped to new values, or null to unset.")


class ConfigChange(_Record):
    changed: bool = Field(description="False when every var already had the value asked for.")
    release: ReleaseInfo = Field(description="The release now current (new when changed).")
    config: dict[str, str] = Field(description="The app's config vars after the change.")


class PlatformStatus(_Record):
    version: str = Field(description="Kiln's version.")
    store: str = Field(description="The store's database kind: sqlite or postgresql.")
    apps: int = Field(description="How many apps exist.")
    run: bool = Field(True, description="Whether this platform runs apps (Ray Serve).")
    apps_url: str = Field("", description="Base URL of the apps.")
    isolation: str = Field("", description="How apps' own code is kept apart (kiln.sandbox).")


# -- wire types the stages produce and the CLI shows -------------------------------------------


class LogSource(enum.StrEnum):
    """Where an app's log line comes from (``kiln logs --source``)."""

    BUILD = "build"
    RELEASE = "release"
    DYNO = "dyno"
    ROUTER = "router"
    USAGE = "usage"  # API-key use counts, shipped by supervisors
    METRICS = "metrics"  # an LLM engine's figures, shipped by supervisors (not shown by default)


class LogRecord(BaseModel):
    """One line of an app's log, as ``kiln logs`` reads it."""

    ts: float = Field(description="Unix time of the line.")
    source: LogSource = Field(description="build, release, dyno, router, usage or metrics.")
    process: str = Field(description="Which replica (or build) wrote it.")
    line: str
    release: int | None = Field(None, description="The release the replica ran (router lines).")
    node: str | None = Field(
        None, description="The node the line came from (dyno, router and release lines)."
    )


class CachedModel(BaseModel):
    """A model in the model cache (``kiln models``)."""

    repo_id: str
    size: int = Field(description="Bytes on disk.")
    revisions: list[str] = Field(description="Cached commits (short).")
    used_by: list[str] = Field(
        default_factory=list, description="Apps whose current release serves it."
    )


class GpuProcess(BaseModel):
    pid: int
    memory_used: int = Field(0, description="Bytes of GPU memory the process holds.")
    app: str | None = Field(None, description="The Kiln app, when the process is one of its dynos.")
    replica: str | None = Field(None, description="Its replica (dyno.xxxxxx).")


class GpuInfo(BaseModel):
    index: int
    uuid: str
    name: str
    memory_total: int
    memory_used: int
    utilization: int | None = Field(None, description="Percent of time a kernel ran, last sample.")
    temperature: int | None = Field(None, description="Degrees Celsius.")
    processes: list[GpuProcess] = Field(default_factory=list)


class NodeInventory(BaseModel):
    node_id: str = ""
    node_ip: str = ""
    hostname: str = ""
    gpus: list[GpuInfo] = Field(default_factory=list)
    cpu_only_reason: str | None = Field(None, description="Why this node lists no GPUs.")


class NodeStatus(_Record):
    """A node of the cluster, what it offers and what runs there (``kiln nodes``)."""

    name: str = Field(
        description="KILN_NODE_NAME of the node (head for kiln up's), or its address."
    )
    node_id: str = Field(description="Ray's id of the node.")
    address: str = Field(description="The node's address in the cluster.")
    head: bool = Field(False, description="The head node: the control plane's.")
    state: str = Field(description="ALIVE, DRAINING (kiln nodes:drain) or DEAD.")
    cpus: float = 0.0
    cpus_used: float = Field(0.0, description="CPUs the node's dynos reserve.")
    gpus: float = 0.0
    gpus_used: float = Field(0.0, description="GPUs the node's dynos reserve.")
    accelerator: str | None = Field(None, description="Ray's accelerator type, e.g. H100.")
    dynos: list[str] = Field(default_factory=list, description="app/replica of its dynos.")


class CanaryFigures(_Record):
    """One release's requests since a canary started."""

    release: int
    requests: int = 0
    errors: int = Field(0, description="Answers of 500 and above.")
    error_rate: float = Field(0.0, description="Percent of answers that were 5xx.")
    p95_ms: float | None = None


class CanaryInfo(_Record):
    """An app's canary, beside the release it is judged against (``kiln canary``)."""

    app: str
    share: int = Field(description="Percent of the app's replicas asked for the canary.")
    status: ReleaseStatus = Field(description="pending (its dynos starting) or canary (serving).")
    started_at: datetime | None = None
    stable: CanaryFigures = Field(description="The release before it.")
    canary: CanaryFigures
    auto_s: float | None = Field(None, description="[rollout] auto: when it is promoted by itself.")
    judgement: str = Field("", description="What Kiln makes of it now.")


class GcItem(_Record):
    """Something garbage collection removes (or would)."""

    kind: str = Field(description="slug, venv, image, model, sandbox, log or scratch.")
    ref: str = Field(description="Its path, or an image's tag.")
    size: int = Field(description="Bytes (hard-linked files count in full).")
    app: str | None = None
    why: str = ""


class GcReport(_Record):
    """What ``kiln gc`` freed, or with ``--dry-run`` would free; and the models it keeps."""

    dry_run: bool
    items: list[GcItem] = Field(default_factory=list)
    freed: int = Field(0, description="Bytes.")
    kept_models: dict[str, list[str]] = Field(
        default_factory=dict, description="Each cached model kept, and the releases that need it."
    )
