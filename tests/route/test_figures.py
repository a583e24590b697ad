"""An app's request figures from its routers' lines: what kiln metrics prints."""

from kiln.models import LogRecord, LogSource
from kiln.route.figures import percentile, summarize


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
