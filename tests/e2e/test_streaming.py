"""Journey: server-sent events stream through the app's URL chunk by chunk."""

import itertools
import json
import time
from collections.abc import Callable

import httpx
import pytest

from tests.support.apps import APPS
from tests.support.platform import Platform, deploy

pytestmark = pytest.mark.integration


def test_server_sent_events_stream_through_the_url_chunk_by_chunk(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    app = fresh_app(platform, "stream")
    deploy(platform, APPS / "streams_sse", app, "--artifact", "slug")
    arrivals = []
    with (
        httpx.Client() as client,
        client.stream("GET", f"{platform.app_url(app)}/events?n=4&gap=0.4") as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 5
    gaps = [b - a for a, b in itertools.pairwise(arrivals)][:3]
    assert all(gap > 0.25 for gap in gaps), gaps  # each event came when it was sent
    # The platform counted it: a streamed answer, its first event, the replica's start
    release = platform.ps(app)["release"]
    labels = f'app="{app}",release="{release}"'  # Prometheus's text sorts labels by name
    seen = {"text": ""}

    def counted() -> bool:
        with platform.api() as api:
            seen["text"] = api.get("/metrics").text
        return f"kiln_output_events_total{{{labels}}} 5.0" in seen["text"]

    try:
        platform.wait("the stream in /metrics", counted, timeout_s=30)
    except AssertionError:
        mine = [line for line in seen["text"].splitlines() if app in line]
        raise AssertionError(f"no {labels} stream in /metrics: {mine}") from None
    text = seen["text"]
    assert f'kiln_requests_total{{app="{app}",code="200",release="{release}"}}' in text
    assert f"kiln_time_to_first_token_seconds_count{{{labels}}} 1.0" in text
    starts = f'kiln_cold_start_seconds_count{{app="{app}",phase="total",release="{release}"}}'
    assert f"{starts} 1.0" in text
    summary = json.loads(platform.kiln("metrics", "-a", app, "--json").output)
    assert summary["total"]["cold_starts"] == 1 and summary["total"]["first_chunk_p50_ms"] < 1000
