"""What the router's lines say of an app's requests: counts by status class and latency
percentiles, per release, over a window (``kiln metrics``; the canary's judgement reads the
same lines). Each replica's supervisor logs one line a request: ``GET /path 200 12.3ms``, maybe
followed by `` (why it ended)``, with the release its dyno runs.

>>> parse(LogRecord(ts=0, source="router", process="dyno.a", line="GET / 503 4.0ms (held)"))
(503, 4.0)
"""

from __future__ import annotations

__all__ = ["parse", "percentile", "summarize"]

import math
import re
from collections.abc import Iterable

from kiln.models import LogRecord, LogSource, RequestFigures

_ROUTER_LINE = re.compile(r"^\S+ \S+ (\d{3}) ([\d.]+)ms(?: \(.*\))?$")


def parse(record: LogRecord) -> tuple[int, float] | None:
    """``(status, milliseconds)`` of a router line; None for any other line."""
    if record.source is not LogSource.ROUTER:
        return None
    match = _ROUTER_LINE.match(record.line)
    return None if match is None else (int(match.group(1)), float(match.group(2)))


def percentile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0-100) of an ascending list."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _figures(
    release: int | None, answers: list[tuple[int, float]], window_s: float
) -> RequestFigures:
    latencies = sorted(ms for _status, ms in answers)
    classes: dict[str, int] = {}
    for status, _ms in answers:
        key = f"{status // 100}xx"
        classes[key] = classes.get(key, 0) + 1
    return RequestFigures(
        release=release, requests=len(answers),
        per_s=round(len(answers) / window_s, 3) if window_s > 0 else 0.0, status=classes,
        p50_ms=percentile(latencies, 50), p95_ms=percentile(latencies, 95),
        p99_ms=percentile(latencies, 99),
    )  # fmt: skip


def summarize(
    records: Iterable[LogRecord], window_s: float
) -> tuple[RequestFigures, list[RequestFigures]]:
    """All requests' figures over ``window_s`` seconds, and each release's, newest first."""
    everything: list[tuple[int, float]] = []
    by_release: dict[int | None, list[tuple[int, float]]] = {}
    for record in records:
        answer = parse(record)
        if answer is not None:
            everything.append(answer)
            by_release.setdefault(record.release, []).append(answer)
    releases = sorted(by_release, key=lambda r: -1 if r is None else r, reverse=True)
    return (_figures(None, everything, window_s),
            [_figures(r, by_release[r], window_s) for r in releases])  # fmt: skip
