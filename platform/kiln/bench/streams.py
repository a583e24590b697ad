"""Streamed completions, timed: tokens/s and time to first token for an llm engine called
in-process and for the llm runtime's OpenAI API over HTTP, with the same prompts. Shared by
``kiln.bench.llm`` and ``kiln.bench.gpu_llm``; needs no Ray (the GPU machine has none)."""

from __future__ import annotations

__all__ = ["PROMPTS", "engine_run", "http_run"]

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

PROMPTS = ["hello kiln", "ray serve scales", "the quick brown fox", "models on hardware you own"]


async def engine_run(
    engine: Any, requests: int, concurrency: int, max_tokens: int
) -> tuple[float, float]:
    """(tokens/s, median time to first token) for REQUESTS completions, CONCURRENCY at a time."""
    from kiln_runtime.llm.engine import SamplingParams

    loop = asyncio.get_running_loop()
    ttfts: list[float] = []
    tokens = 0

    async def one(i: int) -> None:
        nonlocal tokens
        ids = list(
            engine.tokenizer(PROMPTS[i % len(PROMPTS)], add_special_tokens=False)["input_ids"]
        )
        sent = time.perf_counter()
        request = engine.submit(ids, SamplingParams(max_tokens=max_tokens, temperature=0), loop)
        first = None
        async for _delta in request.stream():
            first = first or time.perf_counter()
        ttfts.append((first or time.perf_counter()) - sent)
        tokens += request.completion_tokens

    started = time.perf_counter()
    await _in_waves(one, requests, concurrency)
    return tokens / (time.perf_counter() - started), sorted(ttfts)[len(ttfts) // 2]


async def http_run(
    url: str, requests: int, concurrency: int, max_tokens: int,
    extra: dict[str, Any] | None = None, uds: str | None = None,
) -> tuple[float, float]:  # fmt: skip
    """As ``engine_run``, over HTTP at ``url`` (through the unix socket ``uds`` when given)."""
    ttfts: list[float] = []
    tokens = 0

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        timeout=600, limits=limits, transport=httpx.AsyncHTTPTransport(uds=uds, limits=limits)
    ) as client:

        async def one(i: int) -> None:
            nonlocal tokens
            body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "temperature": 0,
                    "stream": True, "stream_options": {"include_usage": True}, **(extra or {})}  # fmt: skip
            sent = time.perf_counter()
            first = None
            async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    event = json.loads(line[6:])
                    if event.get("choices") and event["choices"][0].get("text"):
                        first = first or time.perf_counter()
                    if event.get("usage"):
                        tokens += event["usage"]["completion_tokens"]
            ttfts.append((first or time.perf_counter()) - sent)

        started = time.perf_counter()
        await _in_waves(one, requests, concurrency)
        return tokens / (time.perf_counter() - started), sorted(ttfts)[len(ttfts) // 2]


async def _in_waves(one: Callable[[int], Awaitable[None]], requests: int, concurrency: int) -> None:
    for start in range(0, requests, concurrency):
        await asyncio.gather(*(one(i) for i in range(start, min(requests, start + concurrency))))
