"""Ray Serve, through its REST API (the Ray dashboard): apply a whole config, read the status.

The control plane is not a Ray driver: it survives Ray restarts and Ray survives its restarts.
``ServeBackend`` is the small interface the reconciler uses; tests use an in-memory fake.
"""

from __future__ import annotations

__all__ = [
    "AppState",
    "ReplicaState",
    "ServeBackend",
    "ServeRefused",
    "ServeRest",
    "ServeUnavailable",
]

import re
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, Field

from kiln.errors import Unavailable


class ServeUnavailable(Unavailable):
    default_code = "serve_unavailable"


class ServeRefused(ServeUnavailable):
    """Serve answered, and refused the config (4xx): something in it, not Serve, is wrong."""

    default_code = "serve_refused"


class ReplicaState(BaseModel):
    replica_id: str
    state: str = Field(description="STARTING, RUNNING, STOPPING, ...")
    node_id: str | None = None
    node_ip: str | None = None
    pid: int | None = None
    start_time_s: float | None = None
    release: int | None = Field(None, description="The release the replica runs, if known.")


class AppState(BaseModel):
    name: str
    status: str = Field(description="DEPLOYING, RUNNING, DEPLOY_FAILED, UNHEALTHY, ...")
    message: str = ""
    release: int | None = Field(None, description="The release Serve was last told to run.")
    deployment_status: str = ""
    deployment_message: str = ""
    replicas: list[ReplicaState] = Field(default_factory=list)
    replica_cpus: float = Field(0.0, description="What each replica reserves: CPUs.")
    replica_gpus: float = Field(0.0, description="What each replica reserves: GPUs.")


class ServeBackend(Protocol):
    def apply(self, config: dict[str, Any]) -> None: ...
    def status(self) -> dict[str, AppState]: ...


_DYNO_FAILED = re.compile(r"DynoFailed: (.*)", re.S)


def failure_reason(message: str) -> str:
    """The dyno supervisor's own words from a Serve error message, without Serve's traceback."""
    match = _DYNO_FAILED.search(message)
    if match:
        return match.group(1).strip()
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else message


class ServeRest:
    def __init__(
        self, dashboard_url: str, timeout_s: float = 120.0, headers: dict[str, str] | None = None
    ) -> None:
        self.url = f"{dashboard_url.rstrip('/')}/api/serve/applications/"
        # Ray's auth token (kiln.run.cluster.ray_headers): the dashboard refuses calls without.
        self._http = httpx.Client(timeout=timeout_s, headers=headers)

    def apply(self, config: dict[str, Any]) -> None:
        try:
            response = self._http.put(self.url, json=config)
        except httpx.TransportError as exc:
            raise ServeUnavailable(f"Ray Serve's API at {self.url} did not answer: {exc}") from None
        if response.is_error:
            kind = ServeRefused if response.status_code in (400, 422) else ServeUnavailable
            raise kind(
                f"Ray Serve refused the config ({response.status_code}): {response.text[:2000]}"
            )

    def status(self) -> dict[str, AppState]:
        try:
            response = self._http.get(self.url, timeout=10)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise ServeUnavailable(f"Ray Serve's API at {self.url} did not answer: {exc}") from None
        return parse_status(response.json())


def parse_status(body: dict[str, Any]) -> dict[str, AppState]:
    apps = {}
    for name, app in (body.get("applications") or {}).items():
        args = (app.get("deployed_app_config") or {}).get("args") or {}
        release = (args.get("spec") or {}).get("release")
        deployment: dict[str, Any] = next(iter((app.get("deployments") or {}).values()), {})
        replicas = [
            ReplicaState(
                replica_id=r.get("replica_id", ""),
                state=r.get("state", ""),
                node_id=r.get("node_id"),
                node_ip=r.get("node_ip"),
                pid=r.get("pid"),
                start_time_s=r.get("start_time_s"),
            )
            for r in deployment.get("replicas", [])
        ]
        options = (deployment.get("deployment_config") or {}).get("ray_actor_options") or {}
        apps[name] = AppState(
            name=name,
            status=app.get("status", ""),
            message=app.get("message", ""),
            release=release,
            deployment_status=deployment.get("status", ""),
            deployment_message=deployment.get("message", ""),
            replicas=replicas,
            replica_cpus=float(options.get("num_cpus") or 0),
            replica_gpus=float(options.get("num_gpus") or 0),
        )
    return apps
