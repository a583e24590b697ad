"""Run on a GPU machine (no Ray, no network needed): the llm runtime's HTTP server against its
engine called in-process, same model, same prompts, one run.

    PYTHONPATH=platform:runtimes python -m kiln.bench.gpu_llm [--hidden 1024] [--layers 12]

Builds a random Llama-style model of the given size with a tokenizer trained on the spot (so no
hub is needed), then measures streamed completions one at a time (tokens/s, time to first token)
and CONCURRENCY at once (tokens/s with the engine's batching), first in-process, then through
`kiln_runtime.llm.server` on loopback started as a dyno is ($PORT, $KILN_MODEL). Runs on the CPU
too (slowly at the default size: pass --hidden 64 --layers 2). Needs torch, transformers,
tokenizers, fastapi, uvicorn, httpx and pydantic. Target: HTTP >= 0.95x in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from kiln.bench.streams import PROMPTS, engine_run, http_run
from kiln.bench.tiny_model import build as build_model
from kiln_runtime.llm.engine import TransformersEngine


def start_server(model: Path, max_batch: int) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "KILN_MODEL": str(model),
           "KILN_MAX_BATCH": str(max_batch), "HF_HUB_OFFLINE": "1"}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-c", "from kiln_runtime.llm.server import main; main()"], env=env
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the llm server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the llm server did not become healthy in 600 s")


def model_alone(engine: TransformersEngine, batch: int, steps: int = 64) -> float:
    """Tokens/s of the model by itself: greedy decode steps of BATCH rows, with the one copy to
    the host per step that streaming needs, and nothing else (no sampling per request, no text):
    the ceiling for any engine driving this model from Python, eager."""
    import torch

    model = engine.model
    prompt = engine.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt] * batch, device=engine.device)
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        for timed in (False, True):  # the first pass warms up this batch size's kernels
            cache = engine._cache_of(out)
            token = out.logits[:, -1:].argmax(-1)
            started = time.perf_counter()
            for _ in range(steps):
                step = model(input_ids=token, use_cache=True, **{engine._cache_arg: cache})
                cache = engine._cache_of(step)
                token = step.logits[:, -1:].argmax(-1)
                token.tolist()
            if timed:
                return batch * steps / (time.perf_counter() - started)
            out = model(input_ids=ids, use_cache=True)
    raise AssertionError("unreachable")


def profile(engine: TransformersEngine, concurrency: int, max_tokens: int) -> None:
    """Print where the engine thread spends its time (cProfile of its batch steps) while it runs
    CONCURRENCY streams: an extra, untimed pass."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    steps, admit = engine._step, engine._admit

    def profiled(method: Any) -> Any:
        def run(*args: Any) -> Any:
            profiler.enable()
            try:
                return method(*args)
            finally:
                profiler.disable()

        return run

    engine._step, engine._admit = profiled(steps), profiled(admit)  # type: ignore[method-assign]
    try:
        asyncio.run(engine_run(engine, concurrency, concurrency, max_tokens))
    finally:
        engine._step, engine._admit = steps, admit  # type: ignore[method-assign]
    print(f"\nthe engine thread, {concurrency} streams at once (cProfile, by own time):")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats("kiln_runtime", 12)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--profile", action="store_true", help="also profile the engine thread")
    parser.add_argument(
        "--max-batch", type=int, help="the engine's batch limit (default: concurrency, at least 8)"
    )
    args = parser.parse_args()
    max_batch = args.max_batch or max(8, args.concurrency)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no CUDA device)"
    with tempfile.TemporaryDirectory(prefix="kiln-gpu-llm-") as work:
        model = build_model(Path(work) / "model", hidden=args.hidden, layers=args.layers)
        engine = TransformersEngine.load(str(model), max_batch=max_batch)
        params = sum(p.numel() for p in engine.model.parameters())
        print(f"device: {device}; model: {params / 1e6:.1f}M parameters, {engine.model.dtype}; "
              f"batches of up to {max_batch}")  # fmt: skip
        asyncio.run(engine_run(engine, 2, 2, 4))  # warm up kernels
        alone = {label: model_alone(engine, width) for label, width in
                 (("one at a time", 1), (f"{args.concurrency} at once", args.concurrency))}  # fmt: skip
        rows = {}
        for label, concurrency in (
            ("one at a time", 1),
            (f"{args.concurrency} at once", args.concurrency),
        ):
            rows[("engine in-process", label)] = asyncio.run(
                engine_run(engine, args.requests, concurrency, args.max_tokens)
            )
        if args.profile:
            profile(engine, args.concurrency, args.max_tokens)
        del engine
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        process, url = start_server(model, max_batch)
        try:
            asyncio.run(http_run(url, 2, 2, 4))
            for label, concurrency in (
                ("one at a time", 1),
                (f"{args.concurrency} at once", args.concurrency),
            ):
                rows[("runtime over HTTP", label)] = asyncio.run(
                    http_run(url, args.requests, concurrency, args.max_tokens)
                )
        finally:
            process.terminate()
            process.wait(30)
    print(f"\n{args.requests} streamed completions of {args.max_tokens} tokens (temperature 0)")
    print(f"  {'':<20}{'':<16}{'tokens/s':>10}{'TTFT p50 ms':>14}")
    worst = float("inf")
    for (who, label), (tps, ttft) in rows.items():
        ratio = ""
        if who == "runtime over HTTP":
            ratio_value = tps / rows[("engine in-process", label)][0]
            worst = min(worst, ratio_value)
            ratio = f"   {ratio_value:.2f}x in-process"
        print(f"  {who:<20}{label:<16}{tps:>10.0f}{ttft * 1000:>14.1f}{ratio}")
    print(f"worst ratio {worst:.2f}x (target >= 0.95x)")
    print("the model alone (greedy decode steps, one copy to the host each, no engine):")
    for label, tps in alone.items():
        print(f"  {label:<16}{tps:>10.0f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
