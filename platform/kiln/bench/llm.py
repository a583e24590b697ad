"""LLM serving, side by side in one run: tokens/s and time to first token through Kiln's URL
(HAProxy -> dyno supervisor -> llm runtime) against the same engine called in-process, on the
same tiny model and prompts; then a cold start from zero replicas, split into its parts.

    python -m kiln.bench.llm [--requests 8] [--max-tokens 64] [--rounds 5]
    python -m kiln.bench.llm --engine vllm [--max-tokens 64] [--rounds 3] [--stream-interval N]

Target: >= 0.95x the in-process tokens/s. The model is a tiny random Llama built here
(CPU), so the figures measure the serving path, not a model.

With ``--engine vllm``: at 1, 8 and 32 concurrent streams, Kiln's URL to an llm app on vLLM
against the same vLLM server called directly (the same dyno command on a port, no Kiln in
front) and against Kiln's URL to the same model on the transformers engine. Targets: Kiln's URL
>= 0.95x direct vLLM's tokens/s, and its time to first token <= direct + 5 ms at 1 stream.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from kiln.bench.serving import answers, from_zero, wait
from kiln.bench.streams import engine_run, http_run
from kiln.bench.tiny_model import build as build_tiny_model
from kiln.builds.artifacts import BuildJob
from kiln.builds.log import BuildLog
from kiln.builds.runtimes import plan_build
from kiln.builds.slug import SlugBuilder
from kiln.builds.source import tree_digest
from kiln.manifest import parse_manifest
from kiln.models import Artifact
from kiln.run.cluster import LocalRay, ray_headers
from kiln.run.dyno import ProcessDyno, free_port
from kiln.run.logs import last_records, read_records
from kiln.run.serve_api import ServeRest
from kiln.run.serve_config import Deployable, application_config, thread_caps
from kiln.sandbox import Sandbox, sandbox_for
from kiln.settings import Settings
from kiln.vault import load_vault
from kiln_runtime.plan import DirectorySource


def build_llm_slug(
    settings: Settings, model: Path, work: Path, llm: str = "", box: Sandbox | None = None
) -> Artifact:
    source = work / f"app{abs(hash(llm))}"
    source.mkdir()
    manifest = parse_manifest(f'runtime = "llm"\nmodel = "bench/tiny"\n{llm}')
    plan = plan_build(DirectorySource(source), manifest)
    job = BuildJob("llm", 0, source, tree_digest(source), plan, manifest, work,
                   sandbox=box or sandbox_for(settings, "bench-llm", 1))  # fmt: skip
    artifact = SlugBuilder(settings).build(job, BuildLog(lambda line: print(f"  {line}")))
    return artifact.model_copy(
        update={"env": {**artifact.env, "KILN_MODEL": str(model)}}
    )  # a local folder


def load_engine(model: Path) -> Any:
    import torch

    from kiln_runtime.llm.engine import TransformersEngine

    # The same math threads as the dyno gets (resources.cpu = 1): a fair comparison.
    torch.set_num_threads(int(thread_caps(1.0)["OMP_NUM_THREADS"]))
    return TransformersEngine.load(str(model))


def cold_start(settings: Settings, serve: ServeRest, artifact: Artifact, base: str) -> None:
    """The first token from zero replicas through Kiln, without and with a warm spare; then the
    same dyno alone, twice: with its virtualenv as built, and compiling every module it imports
    (no bytecode to read, as a container's start was before builds compiled it). Each split as
    the runtime logs it: its own start, importing torch and transformers, loading the weights."""
    print("\ncold start of an llm app (time to the first streamed token)")
    for label, app in (("", "cold-llm"), (", warm spare", "spare-llm")):
        if app == "spare-llm":
            _from_zero(settings, serve, base, app)  # its first replica leaves the spare
        kiln_first, parts, model = _from_zero(settings, serve, base, app)
        print(f"  Kiln from zero replicas{label}: first token {kiln_first:.2f}s\n    {parts}\n"
              f"    the dyno's own: {_split(model)}")  # fmt: skip
    with tempfile.TemporaryDirectory() as nowhere:
        for label, env in (("as built", {}), ("compiling at start", {"PYTHONPYCACHEPREFIX": nowhere})):  # fmt: skip
            listening, loaded, first, split = _bare(artifact, env)
            print(f"  bare dyno, {label}: listening {listening:.2f}s, weights loaded {loaded:.2f}s, "
                  f"first token {first:.2f}s\n    {split}")  # fmt: skip


def _from_zero(settings: Settings, serve: ServeRest, base: str, app: str) -> tuple[float, str, str]:
    """APP's first token from zero replicas: seconds, the replica's parts, the dyno's line."""
    sent_at = time.time()
    took, parts, _ = from_zero(settings, serve, app, lambda: _first_token(f"{base}/{app}"))
    model = next((r.line for r in read_records(settings.log_dir, app)
                  if r.ts >= sent_at and _READY in r.line), "")  # fmt: skip
    return took, parts, model


def _bare(artifact: Artifact, env: dict[str, str]) -> tuple[float, float, float, str]:
    """The dyno alone, writing no bytecode: seconds until it listens, until its weights are
    loaded, until its first token; and its own split."""
    lines: list[str] = []
    env = {**artifact.env, "PYTHONDONTWRITEBYTECODE": "1", **env}
    dyno = ProcessDyno(artifact.command, Path(artifact.reference) / "app", env, lines.append)
    started = time.perf_counter()
    dyno.start()
    try:
        wait("the dyno to listen", lambda: _listening(dyno.url), every_s=0.01)
        listening = time.perf_counter() - started
        wait("the weights", lambda: answers(f"{dyno.url}/healthz"), every_s=0.01)
        loaded = time.perf_counter() - started
        _first_token(dyno.url)
        first = time.perf_counter() - started
    finally:
        dyno.stop(10)
    return listening, loaded, first, _split(next((x for x in lines if _READY in x), ""))


_READY = "after the process started"


def _split(line: str) -> str:
    """The runtime's line (``... ready 2.41s after the process started: runtime 0.45s, ...``)
    from its figures on, or what was missing."""
    return line.split(" ready ", 1)[1] if " ready " in line else "(the runtime logged no split)"


def _first_token(url: str) -> None:
    with (
        httpx.Client(timeout=300) as client,
        client.stream(
            "POST",
            f"{url}/v1/completions",
            json={"prompt": "hello", "max_tokens": 1, "stream": True},
        ) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: {"):
                break


def _median(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))


def _listening(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
        return True
    except httpx.TransportError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engine", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--stream-interval", type=int, default=4,
                        help="vLLM's stream_interval: tokens per streamed event (Kiln's "
                        "default 4; 1 streams each token)")  # fmt: skip
    args = parser.parse_args()
    if args.engine == "vllm":
        vllm_main(args.max_tokens, args.rounds, args.stream_interval)
        return
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-llm-"))
    work.chmod(0o755)  # the dynos run as the app's uid and read the model here
    settings = Settings(home=work / "home", http_port=free_port(), ray_port=free_port(),
                        ray_dashboard_port=free_port(), ray_agent_port=free_port())  # fmt: skip
    ray = LocalRay(settings)
    box = sandbox_for(settings, "bench-llm", 1)
    try:
        model = build_tiny_model(work / "model")
        for path in (model, *model.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        print("building the llm slug ...", flush=True)
        artifact = build_llm_slug(settings, model, work, box=box)
        ray.ensure()
        serve = ServeRest(settings.dashboard_url, headers=ray_headers(settings))
        sealed = load_vault(settings).seal({})
        apps = []
        cold = "min_replicas = 0\nmax_replicas = 1\ndownscale_delay_s = 1\ndownscale_to_zero_delay_s = 1"
        for name, scaling in (("llm", "min_replicas = 1\nmax_replicas = 1"), ("cold-llm", cold),
                              ("spare-llm", f"{cold}\nwarm_spare = true")):  # fmt: skip
            manifest = parse_manifest(
                f'runtime = "llm"\nmodel = "bench/tiny"\n[scaling]\n{scaling}\nupscale_delay_s = 0\n'
            )
            apps.append(
                application_config(
                    Deployable(name, 1, artifact, sealed, manifest, sandbox=box),
                    log_dir=str(settings.log_dir),
                    docker_host=None,
                )
            )
        serve.apply(
            {
                "proxy_location": "HeadOnly",
                "http_options": {"host": settings.http_host, "port": settings.http_port},
                "applications": apps,
            }
        )
        base = f"http://{settings.http_host}:{settings.http_port}"
        wait("the llm app", lambda: answers(f"{base}/llm/healthz"), timeout_s=600, every_s=0.5)
        engine = load_engine(model)
        local, kiln = [], []
        for _round in range(args.rounds):  # interleaved, so both see the same machine
            local.append(asyncio.run(engine_run(engine, args.requests, 1, args.max_tokens)))
            kiln.append(asyncio.run(http_run(f"{base}/llm", args.requests, 1, args.max_tokens)))
        local_tps, local_ttft = _median(local)
        kiln_tps, kiln_ttft = _median(kiln)
        print(f"\n{args.requests} streamed completions of {args.max_tokens} tokens, one at a time; "
              f"medians of {args.rounds} interleaved rounds")  # fmt: skip
        print(f"  {'':<24}{'tokens/s':>10}{'TTFT p50 ms':>14}")
        print(f"  {'engine in-process':<24}{local_tps:>10.0f}{local_ttft * 1000:>14.1f}")
        print(f"  {'Kiln URL':<24}{kiln_tps:>10.0f}{kiln_ttft * 1000:>14.1f}   "
              f"{kiln_tps / local_tps:.2f}x tokens/s (target >= 0.95x)")  # fmt: skip
        cold_start(settings, serve, artifact, base)
    finally:
        ray.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(box.root, ignore_errors=True)  # the slug


VLLM_LLM = (
    '[llm]\nengine = "vllm"\nmax_model_len = 256\n'
    "engine_args = {{ enforce_eager = true, max_num_seqs = 32, stream_interval = {interval} }}\n"
)
STREAMS = (1, 8, 32)


def vllm_main(max_tokens: int, rounds: int, interval: int = 4) -> None:
    """Kiln's URL to vLLM vs the same vLLM server called directly on its dyno's socket (one
    server: no second one competing for the cores) vs Kiln's URL to the transformers engine."""
    from kiln.bench.tiny_model import build

    work = Path(tempfile.mkdtemp(prefix="kiln-bench-vllm-"))
    work.chmod(0o755)  # the dynos run as their apps' uids and read the model here
    settings = Settings(home=work / "home", http_port=free_port(), ray_port=free_port(),
                        ray_dashboard_port=free_port(), ray_agent_port=free_port())  # fmt: skip
    ray = LocalRay(settings)
    boxes = {"vllm": sandbox_for(settings, "bench-vllm", 1),
             "plain": sandbox_for(settings, "bench-plain", 2)}  # fmt: skip
    try:
        model = build(work / "model", hidden=128, heads=2)  # vLLM's CPU backend: heads of 64
        print("building the llm slugs (vLLM, transformers) ...", flush=True)
        llms = {"vllm": VLLM_LLM.format(interval=interval),
                "plain": '[llm]\nengine = "transformers"\n'}  # fmt: skip
        artifacts = {name: build_llm_slug(settings, model, work, llm, boxes[name])
                     for name, llm in llms.items()}  # fmt: skip
        # As a release phase leaves it: in the model cache, which sandboxed dynos see their
        # model of (their /tmp is their own).
        cache = settings.home / "models"
        snapshot = cache / "models--bench--tiny" / "snapshots" / ("0" * 40)
        shutil.copytree(model, snapshot)
        (cache / "models--bench--tiny" / "refs").mkdir()
        (cache / "models--bench--tiny" / "refs" / "main").write_text("0" * 40)
        artifacts = {name: a.model_copy(update={"env": {**a.env, "KILN_MODEL": "bench/tiny"}})
                     for name, a in artifacts.items()}  # fmt: skip
        ray.ensure()
        serve = ServeRest(settings.dashboard_url, headers=ray_headers(settings))
        sealed = load_vault(settings).seal({})
        apps = [
            application_config(
                Deployable(name, 1, artifacts[name], sealed, parse_manifest(
                    f'runtime = "llm"\nmodel = "bench/tiny"\n{llm}[scaling]\nmax_ongoing_requests = 64\n'
                    "[health]\nstartup_timeout_s = 900\n"), sandbox=boxes[name]),
                log_dir=str(settings.log_dir), docker_host=None, model_cache=str(cache),
            )
            for name, llm in llms.items()
        ]  # fmt: skip
        serve.apply({"proxy_location": "HeadOnly",
                     "http_options": {"host": settings.http_host, "port": settings.http_port},
                     "applications": apps})  # fmt: skip
        base = f"http://{settings.http_host}:{settings.http_port}"
        for name in llms:
            wait(
                name, lambda name=name: answers(f"{base}/{name}/healthz"), timeout_s=900, every_s=1
            )
        [socket] = boxes["vllm"].sockets.glob("*.sock")  # the dyno's own: vLLM, Kiln not in front
        greedy = {"ignore_eos": True}  # vLLM: every stream makes max_tokens tokens
        rows: list[tuple[int, str, float, float]] = []
        for streams in STREAMS:
            runs: dict[str, list[tuple[float, float]]] = {"kiln": [], "direct": [], "plain": []}
            requests = max(streams * 2, 8)
            for _round in range(rounds):  # interleaved, so all see the same machine
                runs["direct"].append(
                    asyncio.run(
                        http_run(
                            "http://dyno", requests, streams, max_tokens, greedy, uds=str(socket)
                        )
                    )
                )
                runs["kiln"].append(
                    asyncio.run(http_run(f"{base}/vllm", requests, streams, max_tokens, greedy))
                )
                runs["plain"].append(asyncio.run(
                    http_run(f"{base}/plain", requests, streams, max_tokens)))  # fmt: skip
            for name, label in (("direct", "vLLM direct"), ("kiln", "Kiln URL -> vLLM"),
                                ("plain", "Kiln URL -> transformers")):  # fmt: skip
                tps, ttft = _median(runs[name])
                rows.append((streams, label, tps, ttft))
        print(f"\nstreamed completions of {max_tokens} tokens (vLLM stream_interval {interval}); "
              f"medians of {rounds} interleaved rounds (tiny random Llama, CPU)")  # fmt: skip
        print(f"  {'streams':>7}  {'':<26}{'tokens/s':>10}{'TTFT p50 ms':>14}")
        for streams, label, tps, ttft in rows:
            ref = next(r for r in rows if r[0] == streams and r[1] == "vLLM direct")
            note = ""
            if label == "Kiln URL -> vLLM":
                note = (f"   {tps / ref[2]:.2f}x tokens/s (target >= 0.95x), "
                        f"TTFT {1000 * (ttft - ref[3]):+.1f} ms (target <= +5 ms at 1)")  # fmt: skip
            print(f"  {streams:>7}  {label:<26}{tps:>10.0f}{ttft * 1000:>14.1f}{note}")
    except Exception:
        for app in ("vllm", "plain"):  # what the dynos said, to see why
            print(f"\nthe last lines of {app}'s log:")
            for record in last_records(settings.log_dir, app, 40):
                print(f"  {record.source}[{record.process}]: {record.line[:300]}")
        raise
    finally:
        ray.stop()
        for box in boxes.values():  # a vLLM virtualenv is gigabytes
            shutil.rmtree(box.root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
