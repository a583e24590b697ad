"""The platform's request metrics: router lines counted once into Prometheus families."""

import json
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kiln.models import LogRecord, LogSource
from kiln.route.figures import Answer, ReplicaStart, router_line, start_line
from kiln.route.meter import RequestMeter
from kiln.run.logs import append_records


def line(ts: float, text: str, release: int = 1, source: LogSource = LogSource.ROUTER,
         process: str = "dyno.a") -> LogRecord:  # fmt: skip
    return LogRecord(ts=ts, source=source, process=process, line=text, release=release)


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def scrape(
    meter: RequestMeter, apps: list[str]
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(meter.collector(apps))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def test_requests_are_counted_once_by_app_release_and_code_however_often_scraped(
    tmp_path: Path,
) -> None:
    now = 1_000_000.0
    append_records(tmp_path, "web", [
        line(now - 30, router_line("GET", "/", Answer(200, 12.0))),
        line(now - 29, router_line("GET", "/", Answer(200, 700.0, held_ms=650.0)), process="dyno.b"),
        line(now - 28, router_line("GET", "/x", Answer(503, 3.0)), release=2),
        line(now - 27, "GET / 200 1.0ms", source=LogSource.DYNO),  # the app's own output
    ])  # fmt: skip
    meter = RequestMeter(tmp_path)
    meter.ingest(["web"], now=now)
    meter.ingest(["web"], now=now + 1)  # nothing new: nothing counted twice
    figures = scrape(meter, ["web"])
    assert figures[key("kiln_requests_total", app="web", release="1", code="200")] == 2
    assert figures[key("kiln_requests_total", app="web", release="2", code="503")] == 1
    assert figures[key("kiln_request_duration_seconds_count", app="web", release="1")] == 2
    bucket = "kiln_request_duration_seconds_bucket"
    assert figures[key(bucket, app="web", release="1", le="0.025")] == 1
    assert figures[key(bucket, app="web", release="1", le="1.0")] == 2
    assert figures[key("kiln_request_held_seconds_count", app="web", release="1")] == 1


def test_lines_that_arrive_late_are_counted_when_they_settle(tmp_path: Path) -> None:
    now = 1_000_000.0
    meter = RequestMeter(tmp_path, settle_s=2.0)
    append_records(tmp_path, "web", [line(now - 10, "GET / 200 1.0ms")])
    meter.ingest(["web"], now=now)
    # a replica's batch, shipped late: its line is from 1 s ago, inside the settle window
    append_records(tmp_path, "web", [line(now - 1, "GET / 500 1.0ms")])
    meter.ingest(["web"], now=now + 5)
    figures = scrape(meter, ["web"])
    assert figures[key("kiln_requests_total", app="web", release="1", code="500")] == 1


def test_streams_cold_starts_and_requests_in_flight(tmp_path: Path) -> None:
    import time

    now = time.time()
    start = ReplicaStart(worker_s=3.0, prepare_s=0.2, dyno_s=1.1)
    append_records(tmp_path, "chat", [
        line(now - 60, json.dumps({"router": {"in_flight": 9}}), source=LogSource.METRICS,
             process="dyno.gone"),  # stale: that replica stopped reporting
        line(now - 20, start_line(start), source=LogSource.RELEASE),
        line(now - 19, router_line("POST", "/v1/chat", Answer(200, 900.0, first_ms=120.0, chunks=30))),
        line(now - 5, json.dumps({"router": {"in_flight": 3}}), source=LogSource.METRICS),
        line(now - 4, json.dumps({"router": {"in_flight": 2}}), source=LogSource.METRICS),
        line(now - 4, json.dumps({"router": {"in_flight": 1}}), source=LogSource.METRICS,
             process="dyno.b"),
        line(now - 3, json.dumps({"router": "lies"}), source=LogSource.METRICS, process="dyno.c"),
    ])  # fmt: skip
    figures = scrape(RequestMeter(tmp_path), ["chat"])
    v1 = {"app": "chat", "release": "1"}
    assert figures[key("kiln_time_to_first_token_seconds_sum", **v1)] == 0.12
    assert figures[key("kiln_output_events_total", **v1)] == 30
    assert figures[key("kiln_cold_start_seconds_sum", phase="worker", **v1)] == 3.0
    assert figures[key("kiln_cold_start_seconds_count", phase="total", **v1)] == 1
    assert figures[key("kiln_requests_in_flight", app="chat")] == 3
