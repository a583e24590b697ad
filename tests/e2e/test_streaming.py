"""Journey: server-sent events stream through the app's URL chunk by chunk."""

import itertools
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
