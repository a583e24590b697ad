"""Desired state -> Ray Serve config: a pure function, tested without Ray.

One Serve application per app, at route ``/<app>``, with one deployment (``dyno``) whose replicas
are dyno supervisors. Formation changes (replica counts) only touch ``num_replicas`` or
``autoscaling_config``, which Serve applies without restarting replicas; a new release changes
``args``, which Serve rolls out replica by replica.
"""

from __future__ import annotations

__all__ = [
    "DEPLOYMENT",
    "FRONT",
    "IMPORT_PATH",
    "NO_RELEASE",
    "REFUSED",
    "STARTING",
    "STOPPED",
    "Deployable",
    "application_config",
    "assemble",
    "canary_period",
    "dyno_spec",
    "front_config",
    "manifest_refusal",
    "serve_config",
    "serve_refusal",
]

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kiln.manifest import SPARE_RUNTIMES, Accelerator, GpuSpec, Manifest
from kiln.models import Artifact, ArtifactKind, Formation, KeyRule
from kiln.run import early
from kiln.run.spec import CachedModel, DynoSpec
from kiln.sandbox import Sandbox

IMPORT_PATH = "kiln.run.supervisor:build"
# The front's Serve application (kiln.route.front): a dot, which no app's name has.
FRONT = "kiln.front"
# An app's state as the front tells it, for requests that reach it rather than the app's route.
STARTING = "starting"  # Serve has its config; its route is on its way
STOPPED = "stopped"  # its formation is zero replicas
NO_RELEASE = "no_release"  # created, never deployed
REFUSED = "refused"  # its release has no config Serve accepts
DEPLOYMENT = early.DEPLOYMENT  # the one deployment of an app: its replicas are dyno supervisors
RETRY_AFTER_S = 5.0  # what a 503 for a full hold tells the client to wait
# How long Serve averages load before scaling; short, for the fast reaction serverless needs.
LOOK_BACK_PERIOD_S = 5.0
# How often handles (the proxy's too) record and push load to Serve's controller. Ray 2.60 still
# takes it from this deprecated field, not from the environment variables meant to replace it;
# at its default, 10 s, a request arriving at zero replicas waited 4-10 s before Serve even
# decided to start one.
METRICS_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Deployable:
    """What the reconciler knows of one app: its release to run and the formation asked for."""

    app: str
    release: int
    artifact: Artifact
    config_sealed: str
    manifest: Manifest
    formation: Formation | None = None
    # Who may call the app: None = public; else the api-keys rules (digests, never keys).
    keys: tuple[KeyRule, ...] | None = None
    # Which of the manifest's GPU preferences the cluster can hold (the capacity check's choice).
    gpu: GpuSpec | None = None
    # Where and as whom its code runs (kiln.sandbox); None: as the supervisor does.
    sandbox: Sandbox | None = None
    # A newer release on ``canary_share`` percent of the replicas; this one runs on the rest.
    canary: Deployable | None = None
    canary_share: int = 0

    def with_gpu(self, gpu: GpuSpec | None) -> Deployable:
        return dataclasses.replace(self, gpu=gpu)


def _replicas(manifest: Manifest, formation: Formation | None) -> dict[str, Any]:
    scaling = manifest.scaling
    low = formation.min_replicas if formation else scaling.min_replicas
    high = formation.max_replicas if formation else scaling.max_replicas
    target = (
        formation.target_ongoing_requests if formation else None
    ) or scaling.target_ongoing_requests
    if low == high:
        return {"num_replicas": high}
    autoscaling: dict[str, Any] = {
        "min_replicas": low,
        "max_replicas": high,
        # One replica at deploy even when scaling to zero: it proves the release starts.
        "initial_replicas": max(low, 1),
        "target_ongoing_requests": target,
        "upscale_delay_s": scaling.upscale_delay_s,
        "downscale_delay_s": scaling.downscale_delay_s,
        "look_back_period_s": LOOK_BACK_PERIOD_S,
        "metrics_interval_s": METRICS_INTERVAL_S,
    }
    if scaling.downscale_to_zero_delay_s is not None:
        autoscaling["downscale_to_zero_delay_s"] = scaling.downscale_to_zero_delay_s
    return {"autoscaling_config": autoscaling}


def thread_caps(cpu: float) -> dict[str, str]:
    """Math libraries' thread pools sized to the replica's CPU reservation, as Ray does for its
    own workers: a dyno sees every core of its node, and BLAS/OpenMP threads for all of them
    fight the replicas beside it (and its own supervisor) for cores. ``[env]`` or a config var
    overrides them."""
    threads = str(max(1, math.ceil(cpu)))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def _actor_options(manifest: Manifest, gpu: GpuSpec | None) -> dict[str, Any]:
    resources = manifest.resources
    options: dict[str, Any] = {"num_cpus": resources.cpu}
    if resources.memory is not None:
        options["memory"] = resources.memory.bytes
    chosen = gpu or (resources.gpu[0] if resources.gpu else None)
    if chosen is not None:
        options["num_gpus"] = chosen.count
        if chosen.type is not Accelerator.ANY:
            options["accelerator_type"] = chosen.type.value
    return options


def dyno_spec(
    item: Deployable, *, log_dir: str, docker_host: str | None, model_cache: str | None = None,
    registry: str | None = None,
) -> DynoSpec:  # fmt: skip
    """What a supervisor is told to run for ``item``'s release."""
    manifest = item.manifest
    return DynoSpec(
        app=item.app,
        release=item.release,
        artifact=item.artifact,
        env={**thread_caps(manifest.resources.cpu), **manifest.env},
        config_sealed=item.config_sealed,
        health_path=manifest.health.path,
        startup_timeout_s=manifest.health.startup_timeout_s,
        health_timeout_s=manifest.health.timeout_s,
        request_timeout_s=manifest.http.timeout,
        docker_host=docker_host,
        image_source=f"{registry.rstrip('/')}/{item.artifact.reference}"
        if registry and item.artifact.kind is ArtifactKind.IMAGE
        else None,
        log_dir=log_dir,
        model_cache=model_cache if manifest.model is not None else None,
        models=tuple(
            CachedModel(folder=ref.cache_folder, revision=ref.revision) for ref in manifest.models()
        ),
        sandbox=item.sandbox,
        memory_bytes=manifest.resources.memory.bytes if manifest.resources.memory else None,
        warm_spare=manifest.scaling.warm_spare and item.artifact.runtime in SPARE_RUNTIMES,
    )


def canary_period(share: int) -> int:
    """A canary of ``share`` percent runs on every replica whose rank is a multiple of this:
    25% -> ranks 0, 4, 8...; always rank 0, so at least one replica."""
    return max(1, round(100 / share))


def application_config(
    item: Deployable, *, log_dir: str, docker_host: str | None, model_cache: str | None = None,
    registry: str | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """The Serve application for one app, or None when its formation is zero replicas."""
    manifest = item.manifest
    replicas = _replicas(manifest, item.formation)
    if replicas.get("num_replicas") == 0:
        return None
    spec = dyno_spec(item, log_dir=log_dir, docker_host=docker_host, model_cache=model_cache,
                     registry=registry)  # fmt: skip
    # Changes here reach running replicas through reconfigure(): no restart.
    user_config: dict[str, Any] = (
        {"public": True}
        if item.keys is None
        else {"public": False, "keys": [k.model_dump(mode="json") for k in item.keys]}
    )
    if item.canary is not None:  # each replica whose rank falls in the share swaps its dyno
        canary = dyno_spec(item.canary, log_dir=log_dir, docker_host=docker_host,
                           model_cache=model_cache, registry=registry)  # fmt: skip
        user_config["canary"] = {"spec": canary.model_dump(mode="json"), "share": item.canary_share}
    deployment: dict[str, Any] = {
        "name": DEPLOYMENT,
        **replicas,
        "max_ongoing_requests": manifest.scaling.max_ongoing_requests,
        "max_queued_requests": manifest.scaling.max_queued_requests
        if manifest.scaling.max_queued_requests is not None
        else -1,
        # Past max_queued_requests (requests waiting for a replica: at zero replicas, in
        # Serve's proxy) a request gets 503 and Retry-After at once.
        "backpressure_config": {"status_code": 503, "retry_after_s": RETRY_AFTER_S},
        "health_check_period_s": manifest.health.period_s,
        "health_check_timeout_s": manifest.health.timeout_s,
        "graceful_shutdown_timeout_s": spec.stop_timeout_s + 5,
        "graceful_shutdown_wait_loop_s": 0.5,
        # Start a new release's replicas before stopping the old ones; if they never become
        # healthy (or cannot be placed), the old ones keep serving.
        "max_surge_percent": 100,
        "ray_actor_options": _actor_options(manifest, item.gpu),
        "user_config": user_config,
    }
    return {
        "name": item.app,
        "route_prefix": f"/{item.app}",
        "import_path": IMPORT_PATH,
        "args": {"spec": spec.model_dump(mode="json")},
        # The supervisor logs each request itself (its router line, in the app's log); Serve's
        # own access log line per request in each replica's file cost about 5% of the
        # replica's CPU under load, for lines nobody reads.
        "logging_config": {"enable_access_log": False},
        "deployments": [deployment],
    }


def serve_config(
    items: list[Deployable], *, http_host: str, http_port: int, log_dir: str,
    docker_host: str | None, model_cache: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The whole Serve config (the REST API replaces every application with this list)."""
    applications = [
        config
        for item in items
        if (
            config := application_config(
                item, log_dir=log_dir, docker_host=docker_host, model_cache=model_cache
            )
        )
    ]
    return assemble(applications, http_host=http_host, http_port=http_port)


def assemble(
    applications: Iterable[dict[str, Any]], *, http_host: str, http_port: int,
    front: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Serve's whole config from applications' configs, in a stable order (the front last)."""
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": http_host, "port": http_port},
        "applications": [
            *sorted(applications, key=lambda a: str(a["name"])),
            *([front] if front is not None else []),
        ],
    }


def front_config(apps: dict[str, str]) -> dict[str, Any]:
    """The front's application (kiln.route.front): at ``/``, what no app's route takes, told
    each app's state. Changing the states reconfigures its replica; nothing restarts."""
    return {
        "name": FRONT,
        "route_prefix": "/",
        "import_path": "kiln.route.front:build",
        "deployments": [{
            "name": "front",
            "num_replicas": 1,
            "max_ongoing_requests": 1000,
            "ray_actor_options": {"num_cpus": 0},
            "user_config": {"apps": dict(sorted(apps.items()))},
        }],
    }  # fmt: skip


def serve_refusal(application: dict[str, Any]) -> str | None:
    """Why Ray Serve's own schema would refuse this application's config, or None.

    Serve validates the whole config at once: one app it refuses would freeze every other app's
    deploys, scaling and key changes, so each app is checked alone before it is sent."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeApplicationSchema

    try:
        ServeApplicationSchema.model_validate(application)
    except ValidationError as exc:
        return "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'config'}: {error['msg']}"
            for error in exc.errors()
        )
    return None


def manifest_refusal(manifest: Manifest) -> str | None:
    """Why Serve would refuse the application this manifest makes, checked before a release
    is recorded (the manifest's own rules are meant to match Serve's; this makes sure)."""
    placeholder = Artifact(kind=ArtifactKind.SLUG, reference="/", digest="0" * 64,
                           runtime="python", command=["python"])  # fmt: skip
    config = application_config(
        Deployable("app", 1, placeholder, "", manifest), log_dir="/", docker_host=None
    )
    return None if config is None else serve_refusal(config)
