"""The platform's request metrics: every app's router lines (from every replica on every node,
in the app's log on the head) counted into Prometheus counters and histograms by app and
release, for ``/metrics``. Counting happens on the control plane when it is scraped, so the data
path pays nothing beyond the line it logs already.

meter = RequestMeter(settings.log_dir)
registry.register(meter.collector(["web", "chat"]))    # counted each time the registry is read
"""

from __future__ import annotations

__all__ = ["RequestMeter"]

import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from kiln.models import LogRecord, LogSource
from kiln.route.figures import parse, parse_start
from kiln.run.logs import records_since

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
START_BUCKETS = (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300)
FIRST_LOOK_S = 3600.0  # an app first counted: its last hour (a new control plane shows it)
IN_FLIGHT_FRESH_S = 10.0  # replicas report requests in flight every 2 s while they have some


class _Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, value: float) -> None:
        index = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[index] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, out = 0, list[tuple[str, float]]()
        bounds = (*map(floatToGoString, self.bounds), "+Inf")
        for bound, count in zip(bounds, self.counts, strict=True):
            cumulative += count
            out.append((bound, cumulative))
        return out


@dataclass
class _Release:
    """What one release of one app answered since counting began."""

    codes: dict[str, int] = field(default_factory=dict)
    duration: _Histogram = field(default_factory=lambda: _Histogram(LATENCY_BUCKETS))
    first_token: _Histogram = field(default_factory=lambda: _Histogram(LATENCY_BUCKETS))
    held: _Histogram = field(default_factory=lambda: _Histogram(LATENCY_BUCKETS))
    chunks: int = 0
    starts: dict[str, _Histogram] = field(default_factory=dict)


class RequestMeter:
    """Counts router lines as they settle (replicas ship them in batches, ``settle_s`` late):
    each line once, whatever the number of scrapes."""

    def __init__(self, log_dir: Path, settle_s: float = 2.0) -> None:
        self.log_dir = log_dir
        self.settle_s = settle_s
        self._through: dict[str, float] = {}
        self._series: dict[tuple[str, int | None], _Release] = {}
        self._lock = threading.Lock()

    def ingest(self, apps: Iterable[str], now: float | None = None) -> None:
        now = time.time() if now is None else now
        upto = now - self.settle_s
        with self._lock:
            for app in apps:
                since = self._through.get(app, now - FIRST_LOOK_S)
                if upto <= since:
                    continue
                for record in records_since(self.log_dir, app, since):
                    if since < record.ts <= upto:
                        self._count(app, record)
                self._through[app] = upto

    def _count(self, app: str, record: LogRecord) -> None:
        answer = parse(record)
        start = parse_start(record) if answer is None else None
        if answer is None and start is None:
            return
        series = self._series.setdefault((app, record.release), _Release())
        if start is not None:
            for phase, seconds in (("worker", start.worker_s), ("artifact", start.prepare_s),
                                   ("dyno", start.dyno_s), ("total", start.total_s)):  # fmt: skip
                series.starts.setdefault(phase, _Histogram(START_BUCKETS)).observe(seconds)
            return
        assert answer is not None
        code = str(answer.status)
        series.codes[code] = series.codes.get(code, 0) + 1
        series.duration.observe(answer.ms / 1000)
        if answer.held_ms:
            series.held.observe(answer.held_ms / 1000)
        if answer.chunks and answer.first_ms is not None:
            series.first_token.observe(answer.first_ms / 1000)
            series.chunks += answer.chunks

    def in_flight(self, app: str, now: float | None = None) -> int:
        """Requests the app's replicas hold now: the sum of each one's last fresh report."""
        now = time.time() if now is None else now
        last: dict[str, int] = {}
        for record in records_since(self.log_dir, app, now - IN_FLIGHT_FRESH_S):
            if record.source is LogSource.METRICS and record.line.startswith('{"router"'):
                try:
                    last[record.process] = int(json.loads(record.line)["router"]["in_flight"])
                except (ValueError, KeyError, TypeError):
                    continue
        return sum(max(0, n) for n in last.values())

    def collector(self, apps: Iterable[str]) -> _Collector:
        """What a prometheus_client registry reads: ``collect`` for ``apps``."""
        return _Collector(self, list(apps))

    def collect(self, apps: Iterable[str]) -> Iterator[Metric]:
        """The families for ``apps`` (read first), with ``app`` and ``release`` labels."""
        apps = sorted(set(apps))
        self.ingest(apps)
        labels = ["app", "release"]
        requests = CounterMetricFamily(
            "kiln_requests", "Requests answered, by status code.", labels=[*labels, "code"]
        )
        duration = HistogramMetricFamily(
            "kiln_request_duration_seconds", "Time to the whole answer, as the router saw it.",
            labels=labels,
        )  # fmt: skip
        first = HistogramMetricFamily(
            "kiln_time_to_first_token_seconds",
            "Streamed answers (server-sent events, as LLM apps stream tokens): time to the first.",
            labels=labels,
        )
        held = HistogramMetricFamily(
            "kiln_request_held_seconds",
            "Requests that waited in a replica for its dyno to serve (starting, restarting).",
            labels=labels,
        )
        chunks = CounterMetricFamily(
            "kiln_output_events", "Server-sent events streamed out (an LLM's output chunks).",
            labels=labels,
        )  # fmt: skip
        starts = HistogramMetricFamily(
            "kiln_cold_start_seconds",
            "Replica starts, by phase: worker (Ray), artifact (to the node), dyno (to healthy).",
            labels=[*labels, "phase"],
        )
        with self._lock:
            for (app, release), series in sorted(
                self._series.items(), key=lambda i: (i[0][0], i[0][1] or 0)
            ):
                if app not in apps:
                    continue
                values = [app, "" if release is None else str(release)]
                for code, count in sorted(series.codes.items()):
                    requests.add_metric([*values, code], count)
                for family, histogram in ((duration, series.duration),
                                          (first, series.first_token), (held, series.held)):  # fmt: skip
                    if any(histogram.counts):
                        family.add_metric(values, histogram.buckets(), histogram.total)
                if series.chunks:
                    chunks.add_metric(values, series.chunks)
                for phase, histogram in sorted(series.starts.items()):
                    starts.add_metric([*values, phase], histogram.buckets(), histogram.total)
        in_flight = GaugeMetricFamily(
            "kiln_requests_in_flight", "Requests the app's replicas are answering now.",
            labels=["app"],
        )  # fmt: skip
        for app in apps:
            in_flight.add_metric([app], self.in_flight(app))
        yield from (requests, duration, first, held, chunks, starts, in_flight)


class _Collector:
    def __init__(self, meter: RequestMeter, apps: list[str]) -> None:
        self.meter = meter
        self.apps = apps

    def collect(self) -> Iterator[Metric]:
        return self.meter.collect(self.apps)
