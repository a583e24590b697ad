"""What the router's lines say of an app's requests, and the one place their format is written
and read. Each replica's supervisor logs one line a request, with the release its dyno runs::

    GET /v1/chat 200 812.0ms first=95.1ms held=0.0ms chunks=41 (why it ended)

``first``: until a stream of server-sent events sent its first (an LLM's first token);
``held``: waiting inside the replica for its dyno to serve (starting, restarting in
place); ``chunks``: server-sent events in a streamed answer. Each is written only when it says
something. A replica also logs how long it took to start (``replica_line``). ``kiln metrics``,
``/metrics`` and the canary's judgement all read these lines.

>>> parse(LogRecord(ts=0, source="router", process="dyno.a", line="GET / 503 4.0ms (held)")).status
503
"""

from __future__ import annotations

__all__ = ["Answer", "Point", "ReplicaStart", "parse", "parse_start", "percentile",
           "router_line", "start_line", "stop_line", "summarize", "timeline"]  # fmt: skip

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from kiln.models import LogRecord, LogSource, RequestFigures

_ROUTER_LINE = re.compile(
    r"^\S+ \S+ (?P<status>\d{3}) (?P<ms>[\d.]+)ms(?: first=(?P<first>[\d.]+)ms)?"
    r"(?: held=(?P<held>[\d.]+)ms)?(?: chunks=(?P<chunks>\d+))?(?: \((?P<note>.*)\))?$"
)
_START_LINE = re.compile(
    r"^replica started in (?P<total>[\d.]+)s: worker (?P<worker>[\d.]+)s, "
    r"artifact (?P<prepare>[\d.]+)s, dyno (?P<dyno>[\d.]+)s$"
)


@dataclass(frozen=True)
class Answer:
    """One request as its router saw it."""

    status: int
    ms: float
    first_ms: float | None = None
    held_ms: float = 0.0
    chunks: int = 0
    note: str = ""


@dataclass(frozen=True)
class ReplicaStart:
    """How long a replica took to serve, split: its worker process (Ray starting it), bringing
    the artifact and weights to the node, and the dyno until its health check answered."""

    worker_s: float
    prepare_s: float
    dyno_s: float

    @property
    def total_s(self) -> float:
        return self.worker_s + self.prepare_s + self.dyno_s


def router_line(method: str, path: str, answer: Answer) -> str:
    parts = [f"{method} {path} {answer.status} {answer.ms:.1f}ms"]
    if answer.first_ms is not None and answer.chunks:  # a stream's: its first event
        parts.append(f"first={answer.first_ms:.1f}ms")
    if answer.held_ms >= 0.1:
        parts.append(f"held={answer.held_ms:.1f}ms")
    if answer.chunks:
        parts.append(f"chunks={answer.chunks}")
    if answer.note:
        parts.append(f"({answer.note})")
    return " ".join(parts)


def parse(record: LogRecord) -> Answer | None:
    """The answer a router line tells of; None for any other line."""
    if record.source is not LogSource.ROUTER:
        return None
    match = _ROUTER_LINE.match(record.line)
    if match is None:
        return None
    first, held, chunks = match.group("first", "held", "chunks")
    return Answer(
        int(match.group("status")), float(match.group("ms")),
        first_ms=float(first) if first else None, held_ms=float(held) if held else 0.0,
        chunks=int(chunks) if chunks else 0, note=match.group("note") or "",
    )  # fmt: skip


def start_line(start: ReplicaStart) -> str:
    return (f"replica started in {start.total_s:.2f}s: worker {start.worker_s:.2f}s, "
            f"artifact {start.prepare_s:.2f}s, dyno {start.dyno_s:.2f}s")  # fmt: skip


def parse_start(record: LogRecord) -> ReplicaStart | None:
    if record.source is not LogSource.RELEASE:
        return None
    match = _START_LINE.match(record.line)
    if match is None:
        return None
    return ReplicaStart(*(float(match.group(k)) for k in ("worker", "prepare", "dyno")))


def stop_line(release: int) -> str:
    return f"stopping the dyno of v{release}"


_STOP_LINE = re.compile(r"^stopping the dyno of v\d+$")


@dataclass(frozen=True)
class Point:
    """One step of an app's last hour, for the dashboard's charts."""

    t: float  # the step's end, unix time
    requests: int
    errors: int  # 5xx
    p95_ms: float | None
    replicas: int


def timeline(
    records: Iterable[LogRecord], since: float, until: float, step_s: float, replicas_now: int
) -> list[Point]:
    """Requests, server errors, p95 latency and replicas per ``step_s`` from ``since`` to
    ``until``. Replicas are counted back from ``replicas_now`` through the starts and stops the
    replicas logged."""
    steps = max(1, math.ceil((until - since) / step_s))
    answers: list[list[Answer]] = [[] for _ in range(steps)]
    changes: list[tuple[float, int]] = []
    for record in records:
        if record.ts <= since or record.ts > until:
            continue
        answer = parse(record)
        if answer is not None:
            answers[min(steps - 1, int((record.ts - since) // step_s))].append(answer)
        elif parse_start(record) is not None:
            changes.append((record.ts, 1))
        elif record.source is LogSource.RELEASE and _STOP_LINE.match(record.line):
            changes.append((record.ts, -1))
    points = []
    for index, bucket in enumerate(answers):
        end = since + (index + 1) * step_s
        later = sum(delta for ts, delta in changes if ts > end)
        points.append(Point(
            t=end, requests=len(bucket), errors=sum(a.status >= 500 for a in bucket),
            p95_ms=percentile(sorted(a.ms for a in bucket), 95),
            replicas=max(0, replicas_now - later),
        ))  # fmt: skip
    return points


def percentile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0-100) of an ascending list."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _figures(
    release: int | None, answers: list[Answer], starts: int, window_s: float
) -> RequestFigures:
    latencies = sorted(a.ms for a in answers)
    firsts = sorted(a.first_ms for a in answers if a.chunks and a.first_ms is not None)
    classes: dict[str, int] = {}
    for answer in answers:
        key = f"{answer.status // 100}xx"
        classes[key] = classes.get(key, 0) + 1
    return RequestFigures(
        release=release, requests=len(answers),
        per_s=round(len(answers) / window_s, 3) if window_s > 0 else 0.0, status=classes,
        p50_ms=percentile(latencies, 50), p95_ms=percentile(latencies, 95),
        p99_ms=percentile(latencies, 99), first_chunk_p50_ms=percentile(firsts, 50),
        held=sum(a.held_ms > 0 for a in answers), cold_starts=starts,
    )  # fmt: skip


def summarize(
    records: Iterable[LogRecord], window_s: float
) -> tuple[RequestFigures, list[RequestFigures]]:
    """All requests' figures over ``window_s`` seconds, and each release's, newest first."""
    everything: list[Answer] = []
    by_release: dict[int | None, list[Answer]] = {}
    starts: dict[int | None, int] = {}
    for record in records:
        answer = parse(record)
        if answer is not None:
            everything.append(answer)
            by_release.setdefault(record.release, []).append(answer)
        elif parse_start(record) is not None:
            starts[record.release] = starts.get(record.release, 0) + 1
            by_release.setdefault(record.release, [])
    releases = sorted(by_release, key=lambda r: -1 if r is None else r, reverse=True)
    return (_figures(None, everything, sum(starts.values()), window_s),
            [_figures(r, by_release[r], starts.get(r, 0), window_s) for r in releases])  # fmt: skip
