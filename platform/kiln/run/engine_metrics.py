"""An LLM engine's own figures (vLLM's ``vllm:*`` Prometheus metrics), read by each dyno's
supervisor from its dyno and shipped to the app's log as ``metrics`` records; ``kiln ps`` and the
platform's ``/metrics`` read the latest ones back.

>>> sample = 'vllm:num_requests_running{model_name="m"} 2.0\\nother_total 5.0\\n'
>>> summarize(sample)
{'vllm:num_requests_running': 2.0}
"""

from __future__ import annotations

__all__ = [
    "COUNTERS",
    "GAUGES",
    "HISTOGRAMS",
    "figures",
    "latest",
    "llm_apps",
    "scrape",
    "summarize",
]

import asyncio
import json
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from kiln.manifest import Manifest, Runtime
from kiln.models import LlmFigures, LogRecord, LogSource
from kiln.route.upstream import Upstream, UpstreamError
from kiln.run.logs import records_since

GAUGES = {
    "vllm:num_requests_running": "Requests the engine is generating for.",
    "vllm:num_requests_waiting": "Requests queued in the engine.",
    "vllm:kv_cache_usage_perc": "Share of the KV cache in use (0 to 1).",
}
COUNTERS = {
    "vllm:prompt_tokens": "Prompt tokens processed.",
    "vllm:generation_tokens": "Tokens generated.",
    "vllm:request_success": "Requests finished (any reason).",
    "vllm:num_preemptions": "Requests preempted for want of KV cache.",
    "vllm:prefix_cache_queries": "Tokens looked up in the prefix cache.",
    "vllm:prefix_cache_hits": "Tokens found in the prefix cache.",
}
HISTOGRAMS = {
    "vllm:time_to_first_token_seconds": "Time to the first token.",
    "vllm:e2e_request_latency_seconds": "Whole request latency.",
    "vllm:inter_token_latency_seconds": "Time between two tokens of a stream.",
}
FRESH_S = 60.0  # older records belong to a dyno that stopped reporting
_MAX_FIGURE = 1e15  # past any real count of tokens or seconds
MAX_BYTES = 4 << 20  # a /metrics answer past this is not read (it is the app's answer)


def summarize(text: str) -> dict[str, float] | None:
    """The watched ``vllm:*`` figures of one scrape, summed over their labels (models, adapters,
    finish reasons): ``{name: value}``, histograms as ``name_sum`` and ``name_count``. None when
    the text has no vLLM metric (the dyno is not a vLLM server)."""
    wanted = {*GAUGES, *(f"{c}_total" for c in COUNTERS),
              *(f"{h}_{part}" for h in HISTOGRAMS for part in ("sum", "count"))}  # fmt: skip
    from prometheus_client.parser import text_string_to_metric_families  # not at a cold start

    found: dict[str, float] = {}
    seen_vllm = False
    try:
        for family in text_string_to_metric_families(text):
            seen_vllm = seen_vllm or family.name.startswith("vllm:")
            for sample in family.samples:
                if sample.name in wanted and math.isfinite(sample.value):
                    found[sample.name] = found.get(sample.name, 0.0) + sample.value
    except ValueError:  # not Prometheus text at all
        return None
    if not seen_vllm:
        return None
    return _plausible(found)


def _plausible(figures: Mapping[str, object]) -> dict[str, float]:
    """The figures that are finite numbers of a sane size: the dyno is the app's, and figures it
    makes up must not break what reads them (a sum of huge values is no longer finite, and
    int() of that raises)."""
    return {str(k): float(v) for k, v in figures.items()
            if isinstance(v, (int, float)) and math.isfinite(v) and abs(v) < _MAX_FIGURE}  # fmt: skip


def _mean_ms(now: dict[str, float], before: dict[str, float] | None, name: str) -> float | None:
    total, count = now.get(f"{name}_sum"), now.get(f"{name}_count")
    if total is None or not count:
        return None
    if before is not None and count > before.get(f"{name}_count", 0):
        total -= before.get(f"{name}_sum", 0.0)
        count -= before.get(f"{name}_count", 0.0)
    return round(total / count * 1000, 1)


def figures(reports: list[tuple[float, dict[str, float]]]) -> LlmFigures | None:
    """``LlmFigures`` from one dyno's reports ``(ts, summary)``, oldest first."""
    if not reports:
        return None
    at, now = reports[-1]
    before_at, before = reports[-2] if len(reports) > 1 else (None, None)
    rate = None
    if before is not None and before_at is not None and at > before_at:
        made = now.get("vllm:generation_tokens_total", 0.0) - before.get(
            "vllm:generation_tokens_total", 0.0
        )
        rate = round(max(made, 0.0) / (at - before_at), 1)
    return LlmFigures(
        at=at,
        running=int(now.get("vllm:num_requests_running", 0)),
        waiting=int(now.get("vllm:num_requests_waiting", 0)),
        kv_cache_percent=round(now.get("vllm:kv_cache_usage_perc", 0.0) * 100, 1),
        tokens_per_s=rate,
        ttft_ms=_mean_ms(now, before, "vllm:time_to_first_token_seconds"),
        requests=int(now.get("vllm:request_success_total", 0)),
        raw=now,
    )


class NotAnEngine(Exception):
    """The dyno answered, and has no engine figures (no /metrics, or not vLLM's): asking it
    again is noise in its log."""


async def scrape(
    dyno: Upstream, path: str = "/metrics", timeout_s: float = 5.0
) -> dict[str, float] | None:
    """``summarize`` of the dyno's figures at ``path``; None when it does not answer now
    (busy, failing) or says more than MAX_BYTES; NotAnEngine when it is not vLLM."""
    try:
        async with asyncio.timeout(timeout_s):
            status, body = await dyno.get(path, MAX_BYTES)
    except (TimeoutError, UpstreamError):
        return None
    if 400 <= status < 500:
        raise NotAnEngine(f"{path} answered {status}")
    if status != 200 or body is None:
        return None
    summary = await asyncio.to_thread(summarize, body.decode(errors="replace"))
    if summary is None:
        raise NotAnEngine(f"{path} has no vLLM figures")
    return summary


class _Deployed(Protocol):
    @property
    def app(self) -> str: ...
    @property
    def manifest(self) -> str | None: ...


def llm_apps(deployed: Iterable[_Deployed]) -> set[str]:
    """The apps whose release is an llm app: the only ones whose dynos report figures."""
    found = set()
    for item in deployed:
        try:
            if item.manifest and Manifest.model_validate_json(item.manifest).runtime is Runtime.LLM:
                found.add(item.app)
        except ValueError:  # a manifest an older Kiln stored, no longer valid: no figures
            continue
    return found


def _by_dyno(records: Iterable[LogRecord]) -> dict[str, list[tuple[float, dict[str, float]]]]:
    reports: dict[str, list[tuple[float, dict[str, float]]]] = {}
    for record in records:
        try:
            summary = json.loads(record.line)
        except ValueError:
            continue
        if isinstance(summary, dict):
            clean = _plausible(summary)
            if clean:
                reports.setdefault(record.process, []).append((record.ts, clean))
    return reports


def latest(log_dir: Path, app: str, now: float | None = None) -> dict[str, LlmFigures]:
    """Each reporting dyno's figures (by ``dyno.xxxxxx``), from its last two ``metrics``
    records of the last minute (only that minute of the log is read)."""
    now = time.time() if now is None else now
    records = [r for r in records_since(log_dir, app, now - FRESH_S)
               if r.source is LogSource.METRICS]  # fmt: skip
    found = {}
    for dyno, reports in _by_dyno(records).items():
        made = figures(reports[-2:])
        if made is not None:
            found[dyno] = made
    return found
