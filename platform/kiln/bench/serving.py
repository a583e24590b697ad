"""Serving benchmarks, side by side in one run, on one local Ray cluster with the HAProxy ingress:

- overhead: req/s and p50/p99 of the echo example through Kiln's URL (Serve ingress -> dyno
  supervisor -> dyno), against the same app called directly on its dyno port, and against a bare
  Ray Serve deployment of the same app behind the same ingress;
- cold start: first response from zero replicas, against starting the same dyno as a bare process
  and making the same request (with ``--image``, also for the app built as an image, against
  ``docker run`` of that image);
- autoscale: load onset -> max replicas running; load end -> zero replicas.

    python -m kiln.bench.serving [--seconds 10] [--only overhead,coldstart,autoscale] [--image]

Targets: req/s >= 0.8x bare Serve; <= 1 ms added to p50 at concurrency 1; cold start
<= 1.5x the bare process + 1 s. Install wrk (apt-get install wrk) for the most faithful load.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from kiln.bench.bare_echo import app_dir
from kiln.bench.cpu import snapshot, spent
from kiln.bench.load import Result, run_load
from kiln.builds.artifacts import BuildJob
from kiln.builds.image import ImageBuilder
from kiln.builds.log import BuildLog
from kiln.builds.runtimes import plan_build
from kiln.builds.slug import SlugBuilder
from kiln.builds.source import tree_digest
from kiln.engine import connect_engine
from kiln.manifest import parse_manifest
from kiln.models import Artifact, ArtifactKind
from kiln.route.figures import parse_start
from kiln.run.cluster import LocalRay, ray_headers
from kiln.run.dyno import ProcessDyno, free_port
from kiln.run.logs import read_records
from kiln.run.serve_api import ServeRest
from kiln.run.serve_config import Deployable, application_config
from kiln.sandbox import sandbox_for
from kiln.settings import Settings
from kiln.vault import load_vault
from kiln_runtime.plan import DirectorySource

T = TypeVar("T")
MANIFESTS = {
    "echo": "[scaling]\nmin_replicas = 1\nmax_replicas = 1\nmax_ongoing_requests = 64\n",
    "cold": "[scaling]\nmin_replicas = 0\nmax_replicas = 1\nupscale_delay_s = 0\n"
    "downscale_delay_s = 1\ndownscale_to_zero_delay_s = 1\n",
    "scaler": "[scaling]\nmin_replicas = 0\nmax_replicas = 4\ntarget_ongoing_requests = 2\n"
    "upscale_delay_s = 0\ndownscale_delay_s = 2\ndownscale_to_zero_delay_s = 2\nmax_ongoing_requests = 8\n",
}


def build_slug(settings: Settings) -> Artifact:
    source = app_dir()
    plan = plan_build(DirectorySource(source), None)
    with tempfile.TemporaryDirectory() as work:
        job = BuildJob("echo", 0, source, tree_digest(source), plan, None, Path(work),
                       sandbox=sandbox_for(settings, "bench-echo", 1))  # fmt: skip
        return SlugBuilder(settings).build(job, BuildLog())


def build_image(settings: Settings) -> Artifact:
    """The same echo app as an image, with the engine at DOCKER_HOST."""
    engine = connect_engine(settings.resolved_docker_host)
    if engine is None:
        raise SystemExit(f"--image: no container engine answers at {settings.resolved_docker_host}")
    source = app_dir()
    plan = plan_build(DirectorySource(source), None)
    with tempfile.TemporaryDirectory() as work:
        job = BuildJob("bench-echo", 0, source, tree_digest(source), plan, None, Path(work))
        return ImageBuilder(engine, settings).build(job, BuildLog())


def wait(what: str, check: Any, timeout_s: float = 180, every_s: float = 0.1) -> float:
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > timeout_s:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every_s)
    return time.perf_counter() - started


def running(serve: ServeRest, app: str) -> int:
    state = serve.status().get(app)
    return 0 if state is None else sum(r.state == "RUNNING" for r in state.replicas)


def replicas(serve: ServeRest, app: str) -> int:
    """Replicas in any state: a stopping one still drains (Serve waits for it before scaling up)."""
    state = serve.status().get(app)
    return 0 if state is None else len(state.replicas)


def failed(serve: ServeRest) -> str | None:
    broken = [
        f"{n}: {s.deployment_message or s.message}"
        for n, s in serve.status().items()
        if s.status == "DEPLOY_FAILED"
    ]
    return "\n".join(broken) or None


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def deploy(
    serve: ServeRest, settings: Settings, artifact: Artifact, apps: list[str],
    image: Artifact | None = None,
) -> None:  # fmt: skip
    sealed = load_vault(settings).seal({})
    applications = [
        application_config(
            Deployable(app, 1, artifact, sealed, parse_manifest(MANIFESTS[app])),
            log_dir=str(settings.log_dir),
            docker_host=None,
        )
        for app in apps
    ]
    if image is not None:
        applications.append(application_config(
            Deployable("cold-image", 1, image, sealed, parse_manifest(MANIFESTS["cold"])),
            log_dir=str(settings.log_dir), docker_host=settings.resolved_docker_host,
        ))  # fmt: skip
    applications.append({
        "name": "bare", "route_prefix": "/bare", "import_path": "kiln.bench.bare_echo:build",
        "args": {"app_dir": str(app_dir()), "max_ongoing_requests": 64},
        "deployments": [{"name": "bare", "num_replicas": 1, "max_ongoing_requests": 64}],
    })  # fmt: skip
    serve.apply({"proxy_location": "HeadOnly", "http_options": {"host": settings.http_host, "port": settings.http_port},
                 "applications": applications})  # fmt: skip


def row(name: str, result: Result, base: Result | None) -> str:
    ratio = f"{result.requests_per_s / base.requests_per_s:.2f}x" if base else ""
    added = f"{result.p50_ms - base.p50_ms:+.2f}" if base else ""
    return (f"  {name:<28}{result.requests_per_s:>9.0f}{ratio:>8}{result.p50_ms:>9.2f}{added:>9}"
            f"{result.p99_ms:>9.2f}{result.errors:>7}")  # fmt: skip


def overhead(settings: Settings, artifact: Artifact, seconds: float) -> None:
    dyno = ProcessDyno(
        artifact.command, Path(artifact.reference) / "app", {**artifact.env}, lambda _l: None
    )
    dyno.start()
    wait("the direct dyno", lambda: answers(dyno.url + "/"))
    base = f"http://{settings.http_host}:{settings.http_port}"
    targets = {"dyno port (direct)": dyno.url + "/", "bare Ray Serve (HAProxy)": base + "/bare/",
               "Kiln URL (HAProxy+supervisor)": base + "/echo/"}  # fmt: skip
    for connections in (16, 1):
        print(f"\nconcurrency {connections}, {seconds:g}s each"
              f"\n  {'':<28}{'req/s':>9}{'vs bare':>8}{'p50 ms':>9}{'+p50':>9}{'p99 ms':>9}{'errors':>7}")  # fmt: skip
        results, cpu = {}, {}
        for name, url in targets.items():
            before = snapshot()
            results[name] = run_load(url, connections, seconds)
            cpu[name] = spent(before, snapshot()).line(results[name].requests)
        bare = results["bare Ray Serve (HAProxy)"]
        for name, result in results.items():
            print(row(name, result, None if name.startswith("bare") else bare))
        print(f"  (load: {bare.tool})")
        for name, line in cpu.items():
            print(f"  {name}: {line}")
    dyno.stop(10)


def cold_start(
    settings: Settings, artifact: Artifact, serve: ServeRest, app: str = "cold", rounds: int = 3
) -> None:
    """The first response of APP from zero replicas through Kiln, then the same artifact alone
    (a process, or ``docker run`` of an image) until it answers the same request; ``rounds``
    times, interleaved, and the medians."""
    url = f"http://{settings.http_host}:{settings.http_port}/{app}/"
    bare = "docker run" if artifact.kind is ArtifactKind.IMAGE else "bare process"
    print(f"\ncold start (first response from zero replicas), {artifact.kind.value}", flush=True)
    kiln, bares = [], []
    for _ in range(rounds):
        kiln_s, parts, response = from_zero(
            settings, serve, app, lambda: httpx.get(url, timeout=300)
        )
        bare_s = (
            _bare_image(settings, artifact)
            if artifact.kind is ArtifactKind.IMAGE
            else _bare_process(artifact)
        )
        kiln.append(kiln_s)
        bares.append(bare_s)
        print(f"  {bare}: {bare_s:.2f}s   Kiln: {kiln_s:.2f}s (status {response.status_code})"
              + (f"\n    Kiln's parts: {parts}" if parts else ""), flush=True)  # fmt: skip
    kiln_s, bare_s = statistics.median(kiln), statistics.median(bares)
    target = 1.5 * bare_s + 1
    print(f"  median of {rounds}: {bare} {bare_s:.2f}s, Kiln {kiln_s:.2f}s   target <= "
          f"{target:.2f}s: {'met' if kiln_s <= target else 'MISSED'}")  # fmt: skip


def _bare_process(artifact: Artifact) -> float:
    dyno = ProcessDyno(
        artifact.command, Path(artifact.reference) / "app", {**artifact.env}, lambda _l: None
    )
    started = time.perf_counter()
    dyno.start()
    wait("the bare dyno", lambda: answers(dyno.url + "/"), every_s=0.01)
    bare_s = time.perf_counter() - started
    dyno.stop(10)
    return bare_s


def _bare_image(settings: Settings, artifact: Artifact) -> float:
    engine = connect_engine(settings.resolved_docker_host)
    assert engine is not None
    port = free_port()
    started = time.perf_counter()
    container = engine.client.containers.run(
        artifact.reference, detach=True, init=True, ports={"8080/tcp": ("127.0.0.1", port)}
    )
    try:
        wait("docker run", lambda: answers(f"http://127.0.0.1:{port}/"), every_s=0.01)
        return time.perf_counter() - started
    finally:
        container.remove(force=True)


def from_zero(
    settings: Settings, serve: ServeRest, app: str, request: Callable[[], T]
) -> tuple[float, str, T]:
    """Once APP runs no replica, ``request`` it: the seconds it took, where they went
    (:func:`cold_start_parts`) and what it returned."""
    wait(f"{app} to scale to zero", lambda: replicas(serve, app) == 0, every_s=0.5)
    time.sleep(1)
    sent_at, started = time.time(), time.perf_counter()
    result = request()
    took = time.perf_counter() - started
    time.sleep(1.5)  # the replica's lines reach the log in batches
    return took, cold_start_parts(settings, app, sent_at, sent_at + took), result


def cold_start_parts(settings: Settings, app: str, sent_at: float, answered_at: float) -> str:
    """Where the cold request's time went, from the line the replica logs when its dyno is
    ready (``replica started in ...``): Serve deciding to scale up and Ray asking for a worker
    (until the worker process was born), the worker starting (Ray's imports, the replica's
    class), bringing the artifact, the dyno until healthy, then the request's own answer."""
    for record in read_records(settings.log_dir, app):
        start = parse_start(record) if record.ts >= sent_at else None
        if start is None:
            continue
        born = record.ts - start.total_s
        return (f"Serve decision + Ray scheduling {born - sent_at:.2f}s, worker process "
                f"{start.worker_s:.2f}s, artifact {start.prepare_s:.2f}s, dyno start "
                f"{start.dyno_s:.2f}s, first byte {answered_at - record.ts:.2f}s")  # fmt: skip
    return ""


def autoscale(settings: Settings, serve: ServeRest, seconds: float) -> None:
    url = f"http://{settings.http_host}:{settings.http_port}/scaler/slow?seconds=0.5"
    wait("scaler to scale to zero", lambda: running(serve, "scaler") == 0, every_s=0.5)
    load = subprocess.Popen([sys.executable, "-m", "kiln.bench.load", url, "12", str(max(seconds, 40))],
                            stdout=subprocess.DEVNULL)  # fmt: skip
    up = wait("4 replicas", lambda: running(serve, "scaler") >= 4, every_s=0.25)
    load.terminate()
    load.wait()
    down = wait("zero replicas", lambda: running(serve, "scaler") == 0, every_s=0.25)
    print(f"\nautoscale 0..4 (target 2 in flight, 12 clients on a 0.5 s endpoint)\n"
          f"  load onset -> 4 replicas running: {up:.1f}s   load end -> 0 replicas: {down:.1f}s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--only", default="overhead,coldstart,autoscale")
    parser.add_argument("--image", action="store_true",
                        help="cold start of the app built as an image too (DOCKER_HOST)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="cold starts of each app")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    only = set(args.only.split(","))
    home = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    settings = Settings(home=home, http_port=free_port(), ray_port=free_port(),
                        ray_dashboard_port=free_port(), ray_agent_port=free_port())  # fmt: skip
    ray = LocalRay(settings)
    try:
        artifact = build_slug(settings)
        image = build_image(settings) if args.image else None
        print(f"starting Ray at {settings.dashboard_url} ...", flush=True)
        ray.ensure()
        serve = ServeRest(settings.dashboard_url, headers=ray_headers(settings))
        deploy(serve, settings, artifact, ["echo", "cold", "scaler"], image)
        base = f"http://{settings.http_host}:{settings.http_port}"

        def up() -> bool:
            if (problem := failed(serve)) is not None:
                raise SystemExit(f"an app failed to deploy:\n{problem}")
            return answers(base + "/echo/") and answers(base + "/bare/")

        wait("the apps", up, timeout_s=300, every_s=0.5)
        if "overhead" in only:
            overhead(settings, artifact, args.seconds)
        if "coldstart" in only:
            cold_start(settings, artifact, serve, rounds=args.rounds)
            if image is not None:
                cold_start(settings, image, serve, "cold-image", rounds=args.rounds)
        if "autoscale" in only:
            autoscale(settings, serve, args.seconds)
    finally:
        ray.stop()
        shutil.rmtree(home, ignore_errors=True)
        # The apps' sandboxes and what they share (the runtime, uv): this run's own folder,
        # unless the operator named one (KILN_SANDBOX_DIR).
        own = settings.sandbox_dir is None
        shutil.rmtree(settings.resolved_sandbox_dir if own else sandbox_for(settings, "bench-echo", 1).root,
                      ignore_errors=True)  # fmt: skip


if __name__ == "__main__":
    main()
