"""Deploys run on threads of their own: the API answers while one runs, and a deploy past the
queue's room is refused with 429 before its upload is read."""

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from kiln.settings import Settings
from tests.support.apps import echo_with_release
from tests.support.fixtures import serve_slug_api

Archive = Callable[[Path], Path]


def test_the_api_answers_while_a_deploy_runs_and_a_second_is_refused(
    settings: Settings, uv_cache: Path, archive_of: Archive, tmp_path: Path
) -> None:
    slow = archive_of(echo_with_release(tmp_path, "sleep 4")).read_bytes()
    with serve_slug_api(settings, uv_cache_dir=uv_cache, max_concurrent_builds=1,
                        max_queued_builds=0) as api:  # fmt: skip
        api.store.create_app("echo", actor="t")
        first: list[httpx.Response] = []
        with api.client() as client:
            running = threading.Thread(target=lambda: first.append(
                client.post("/apps/echo/builds", content=slow, timeout=120)))  # fmt: skip
            running.start()
            deadline = time.monotonic() + 60
            while not api.store.builds.list("echo"):  # the first deploy has started
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert client.get("/apps").status_code == 200  # the API's threads are free
            second = client.post("/apps/echo/builds", content=slow)
            running.join()
        assert second.status_code == 429 and int(second.headers["retry-after"]) > 0
        assert second.json()["error"]["code"] == "too_many_builds"
        assert first[0].status_code == 200 and '"succeeded"' in first[0].text
