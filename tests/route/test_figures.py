"""An app's request figures from its routers' lines: what kiln metrics prints."""

from kiln.models import LogRecord, LogSource
from kiln.route.figures import (
    Answer,
    ReplicaStart,
    parse,
    parse_start,
    percentile,
    router_line,
    start_line,
    summarize,
)


def router(line: str, release: int | None = 2, ts: float = 0.0) -> LogRecord:
    return LogRecord(ts=ts, source=LogSource.ROUTER, process="dyno.a", line=line, release=release)


def test_requests_are_counted_by_status_class_and_latency_per_release() -> None:
    records = [
        *(router(f"GET / 200 {ms}.0ms") for ms in range(1, 101)),  # v2: 1..100 ms
        router("POST /v1/x 503 9.5ms (held while scaling from zero)"),
        router("GET / 404 2.0ms", release=1),
        router("GET /missing 200"),  # not a router line as the supervisor writes them
        LogRecord(ts=0, source=LogSource.DYNO, process="dyno.a", line="GET / 200 1.0ms"),
    ]
    total, releases = summarize(records, window_s=60)
    assert (total.requests, total.status) == (102, {"2xx": 100, "5xx": 1, "4xx": 1})
    assert total.per_s == 1.7
    assert [(r.release, r.requests) for r in releases] == [(2, 101), (1, 1)]
    v2 = releases[0]
    assert (v2.p50_ms, v2.p95_ms, v2.p99_ms) == (50.0, 95.0, 99.0)  # 101: with the 9.5 ms


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0


def test_a_router_line_says_first_byte_held_time_and_events_and_reads_back() -> None:
    answer = Answer(200, 812.04, first_ms=95.06, held_ms=1500.0, chunks=41, note="cut: no chunk")
    line = router_line("POST", "/v1/chat", answer)
    assert line == "POST /v1/chat 200 812.0ms first=95.1ms held=1500.0ms chunks=41 (cut: no chunk)"
    assert parse(router(line)) == Answer(200, 812.0, 95.1, 1500.0, 41, "cut: no chunk")
    assert (
        router_line("GET", "/", Answer(404, 2.0)) == "GET / 404 2.0ms"
    )  # only what says something


def test_replica_starts_are_counted_as_cold_starts_with_their_split() -> None:
    start = ReplicaStart(worker_s=2.5, prepare_s=0.25, dyno_s=1.0)
    line = LogRecord(ts=0, source=LogSource.RELEASE, process="dyno.a", line=start_line(start),
                     release=2)  # fmt: skip
    assert parse_start(line) == start and start.total_s == 3.75
    streamed = router("POST /v1/chat 200 900.0ms first=80.0ms chunks=20")
    total, (v2,) = summarize([line, streamed, router("GET / 200 5.0ms held=400.0ms")], 60)
    assert (v2.cold_starts, v2.held, v2.first_chunk_p50_ms) == (1, 1, 80.0)
    assert (total.cold_starts, total.requests) == (1, 2)
