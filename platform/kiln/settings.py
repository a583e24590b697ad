"""Platform settings, read from ``KILN_*`` environment variables; built once, passed explicitly.

>>> Settings(home=Path("/tmp/k")).resolved_database_url
'sqlite:////tmp/k/kiln.db'
"""

from __future__ import annotations

__all__ = ["ArtifactChoice", "Settings", "default_home"]

import enum
import hashlib
import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ArtifactChoice(enum.StrEnum):
    AUTO = "auto"
    IMAGE = "image"
    SLUG = "slug"


def default_home() -> Path:
    return Path.home() / ".kiln"


class Settings(BaseSettings):
    """How this control plane runs: where its state lives and where it listens."""

    model_config = SettingsConfigDict(env_prefix="KILN_", extra="ignore")

    home: Path = Field(
        default_factory=default_home,
        description="Directory holding the platform's state: database, secret key, logs, caches.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the store, e.g. postgresql+psycopg://user:pw@host/kiln; "
        "default: a SQLite file in KILN_HOME.",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Fernet key(s) encrypting config vars at rest, comma-separated, newest first; "
        "default: KILN_HOME/secret.key, created on first start.",
    )
    api_host: str = Field("127.0.0.1", description="Interface the control-plane API binds.")
    api_port: int = Field(7100, ge=1, le=65535, description="Port of the control-plane API.")

    run: bool = Field(
        True,
        description="Run apps (Ray Serve and the reconciler); off: the control plane only "
        "(builds and releases are recorded, nothing is served).",
    )
    http_host: str = Field("127.0.0.1", description="Interface apps are served on (Serve's proxy).")
    http_port: int = Field(8000, ge=1, le=65535, description="Port apps are served on.")
    public_url: str | None = Field(
        None, description="Base URL users reach apps at; default http://HTTP_HOST:HTTP_PORT."
    )
    ray_address: str | None = Field(
        None,
        description="An existing Ray cluster to run on (host:port of its GCS); default: start a "
        "local single-node Ray. RAY_ADDRESS works too.",
    )
    cluster_address: str | None = Field(
        None,
        description="kiln up --cluster: the address other nodes reach this head at (its Ray, "
        "the embedded vector store); default: none, one machine with Ray on loopback.",
    )
    registry: str | None = Field(
        None,
        description="An image registry (host:port[/path]) builds push images to and nodes pull "
        "them from; default: the one kiln up --cluster runs, else none (images stay in the "
        "head's engine).",
    )
    registry_username: str | None = Field(None, description="The registry's user.")
    registry_password: SecretStr | None = Field(None, description="That user's password.")
    registry_port: int = Field(
        5000, ge=1, le=65535, description="Port of the registry kiln up --cluster runs."
    )
    cluster_autoscales: bool = Field(
        False,
        description="Ray's autoscaler adds nodes on demand (KubeRay): a replica no node can hold "
        "yet waits for one (kiln ps says so) instead of failing its release.",
    )
    ray_dashboard_url: str | None = Field(
        None,
        description="The Ray dashboard (Serve's REST API) of that cluster; default "
        "http://127.0.0.1:RAY_DASHBOARD_PORT.",
    )
    ray_port: int = Field(6380, ge=1, le=65535, description="GCS port of the local Ray.")
    ray_dashboard_port: int = Field(
        8265, ge=1, le=65535, description="Dashboard port of the local Ray."
    )
    serve_fallback_port: int = Field(
        8500,
        ge=1,
        le=65535,
        description="Port of Serve's fallback proxy behind HAProxy (gRPC: the next one). Serve "
        "binds it with SO_REUSEPORT, so two platforms on one machine must not share it: the "
        "kernel would hand one's requests to the other's proxy.",
    )
    ray_num_cpus: float | None = Field(
        None,
        ge=0,
        description="CPUs the local Ray offers replicas (each takes resources.cpu); default 4 per "
        "core, at least 8: dynos mostly wait on I/O, and a laptop should run several apps. 0 "
        "keeps a cluster's head for the platform: replicas then run on the nodes that joined.",
    )
    warm_workers: int = Field(
        1,
        ge=0,
        le=16,
        description="Ray workers each node keeps started ahead of need, with Serve's replica and "
        "Kiln's supervisor imported (about 150 MiB of memory each, outside the CPUs and memory "
        "replicas reserve): a replica placed there starts at once instead of after a new "
        "process's start and imports (about 1 s of CPU). 0: none.",
    )
    ray_agent_port: int = Field(
        52365, ge=1, le=65535, description="Dashboard agent port of the local Ray."
    )
    builder: ArtifactChoice = Field(
        ArtifactChoice.AUTO,
        description="What builds make: image (needs a Docker API engine), slug (uv venv + app), or "
        "auto: an image where an engine answers, else a slug.",
    )
    docker_host: str | None = Field(
        None, description="The Docker Engine API (dockerd or podman); default: DOCKER_HOST."
    )
    base_image: str | None = Field(
        None,
        description="Base image for CPU apps; default python:3.11-slim, or kiln/base:bookworm "
        "(kiln images:bootstrap) where that is the one present.",
    )
    gpu_base_image: str | None = Field(
        None,
        description="Base image for GPU apps; default: nvidia/cuda:12.4.1-runtime-ubuntu22.04.",
    )
    index_url: str | None = Field(
        None, description="Python package index for builds; default: UV_INDEX_URL or PIP_INDEX_URL."
    )
    ca_bundle: Path | None = Field(
        None,
        description="CA bundle for HTTPS inside builds (corporate proxies); default: SSL_CERT_FILE, "
        "PIP_CERT or REQUESTS_CA_BUNDLE when set.",
    )
    vector_database_url: str | None = Field(
        None,
        description="Admin URL of a PostgreSQL with pgvector for vector-store add-ons; default: "
        "a PostgreSQL the platform runs itself in KILN_HOME/pg.",
    )
    pg_dir: Path | None = Field(
        None,
        description="Where the embedded PostgreSQL keeps its data and socket; default "
        "/var/lib/kiln/pg-<id of KILN_HOME> as root (its own system user must reach it, and no "
        "folder above KILN_HOME is opened for that), else KILN_HOME/pg.",
    )
    vector_port: int = Field(5433, ge=1, le=65535, description="Port of that embedded PostgreSQL.")
    uv_cache_dir: Path | None = Field(
        None, description="uv's package cache for slug builds; default KILN_HOME/cache/uv."
    )
    max_upload_bytes: int = Field(512 * 2**20, gt=0, description="Largest source upload accepted.")
    max_source_bytes: int = Field(
        2 * 2**30, gt=0, description="Largest source tree accepted, uncompressed."
    )
    log_max_bytes: int = Field(
        20 * 2**20, ge=4096, description="Size past which an app's log is rotated."
    )
    log_keep: int = Field(3, ge=0, le=100, description="Rotated log files kept per app.")
    keep_releases: int = Field(
        10,
        ge=1,
        le=1000,
        description="Releases per app whose artifacts (slugs, virtualenvs, images) and models "
        "garbage collection keeps, for rollbacks.",
    )
    max_concurrent_builds: int = Field(
        2, ge=1, le=64, description="Builds that run at once (each takes a core or more)."
    )
    max_queued_builds: int = Field(
        8, ge=0, le=1000, description="Builds that may wait for one of those; past that, 429."
    )
    release_timeout_s: float = Field(
        900.0, gt=0, description="How long kiln.toml's release command may run before it fails."
    )
    sandbox_dir: Path | None = Field(
        None,
        description="Where each app's own directories live (its slugs, virtualenvs, HOME, dyno "
        "sockets), apart from KILN_HOME; default /var/lib/kiln/<id of KILN_HOME> as root, else "
        "KILN_HOME/apps.",
    )
    sandbox_uid_base: int = Field(
        200_000,
        ge=1000,
        le=2**31 - 2**20,
        description="Each app's code runs as uid (and gid) BASE + the app's id, when the "
        "platform is root; pick a range no real user has.",
    )
    allow_slugs: bool = Field(
        True,
        description="Build and run slugs (apps' code as processes on the host). False: images "
        "only, e.g. where the platform is not root and cannot give each app a uid of its own.",
    )
    slug_python: str | None = Field(
        None,
        description="The Python that slug virtualenvs are made from; default this one, or a "
        "system Python (/usr/bin/python3) where apps' uids cannot reach this one.",
    )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'kiln.db'}"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def apps_url(self) -> str:
        return (self.public_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")

    @property
    def gcs_address(self) -> str:
        """Where Ray's GCS answers: the external cluster, else the head kiln up starts."""
        return self.ray_address or f"{self.cluster_address or '127.0.0.1'}:{self.ray_port}"

    @property
    def dashboard_url(self) -> str:
        return (self.ray_dashboard_url or f"http://127.0.0.1:{self.ray_dashboard_port}").rstrip("/")

    @property
    def resolved_sandbox_dir(self) -> Path:
        if self.sandbox_dir is not None:
            return self.sandbox_dir
        if os.geteuid() != 0:
            return self.home / "apps"
        digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:12]
        return Path("/var/lib/kiln") / digest

    @property
    def resolved_pg_dir(self) -> Path:
        if self.pg_dir is not None:
            return self.pg_dir
        legacy = self.home / "pg"
        if os.geteuid() != 0 or (legacy / "data" / "PG_VERSION").exists():
            return legacy  # an existing store stays where its data is
        digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:12]
        return Path("/var/lib/kiln") / f"pg-{digest}"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs" / "apps"

    @property
    def resolved_docker_host(self) -> str | None:
        return self.docker_host or os.environ.get("DOCKER_HOST")

    @property
    def resolved_index_url(self) -> str | None:
        """The package index builds use, when one is set and reachable over HTTP(S)."""
        for url in (
            self.index_url,
            os.environ.get("UV_INDEX_URL"),
            os.environ.get("PIP_INDEX_URL"),
        ):
            if url and url.startswith(("http://", "https://")):
                return url
        return None

    @property
    def resolved_find_links(self) -> list[str]:
        """Local wheel directories the host's pip uses (PIP_FIND_LINKS): builds look there too."""
        return [
            p
            for p in os.environ.get("PIP_FIND_LINKS", "").split()
            if p and Path(p.removeprefix("file://")).is_dir()
        ]

    @property
    def resolved_ca_bundle(self) -> Path | None:
        for value in (self.ca_bundle, *(os.environ.get(k) for k in _CA_VARIABLES)):
            if value and Path(value).is_file():
                return Path(value)
        return None


_CA_VARIABLES = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE")
