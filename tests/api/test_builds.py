"""Builds over HTTP: upload, the live NDJSON log, listings, and uploads that must be refused."""

import json
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from kiln.models import BuildEvent
from tests.conftest import LiveApi
from tests.support.apps import EXAMPLES, echo_with_release

Archive = Callable[[Path], Path]


def upload(api: LiveApi, app: str, archive: bytes) -> list[BuildEvent]:
    with (
        api.client() as client,
        client.stream(
            "POST",
            f"/apps/{app}/builds",
            content=archive,
            headers={"Content-Type": "application/gzip"},
        ) as response,
    ):
        assert response.status_code == 200, response.read()
        return [BuildEvent.model_validate_json(line) for line in response.iter_lines() if line]


def test_a_build_streams_its_log_then_its_result(slug_api: LiveApi, archive_of: Archive) -> None:
    slug_api.store.create_app("echo", actor="t")
    events = upload(slug_api, "echo", archive_of(EXAMPLES / "echo").read_bytes())
    lines = [e.line for e in events if e.line is not None]
    assert lines[0].startswith("-----> Build 1 of echo")
    result = events[-1].build
    assert result is not None and result.status == "succeeded" and result.release == 2
    with slug_api.client() as client:
        listed = client.get("/apps/echo/builds").json()
        assert [b["id"] for b in listed] == [result.id]
        assert client.get(f"/apps/echo/builds/{result.id}").json()["artifact"]["kind"] == "slug"
        assert client.get(f"/apps/echo/builds/{result.id}/log").text.splitlines() == lines
        assert (
            client.get("/apps/echo/releases/2").json()["artifact"]["digest"]
            == result.artifact.digest
        )  # type: ignore[union-attr]


def test_uploads_that_are_refused(slug_api: LiveApi) -> None:
    slug_api.store.create_app("echo", actor="t")
    with slug_api.client() as client:
        too_big = client.post("/apps/echo/builds", content=b"\0" * (4 * 2**20 + 1))
        empty = client.post("/apps/echo/builds", content=b"")
        ghost = client.post("/apps/ghost/builds", content=b"x")
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "body_too_large"
    assert empty.json()["error"]["code"] == "empty_upload"
    assert ghost.status_code == 404
    assert slug_api.store.builds.list("echo") == []


def test_garbage_is_a_failed_build_with_a_clear_cause(slug_api: LiveApi) -> None:
    slug_api.store.create_app("echo", actor="t")
    events = upload(slug_api, "echo", b"definitely not a tarball")
    result = events[-1].build
    assert result is not None and result.status == "failed"
    assert result.error is not None and "not a complete archive" in result.error


def test_two_builds_of_one_app_run_in_turn(
    slug_api: LiveApi, archive_of: Archive, tmp_path: Path
) -> None:
    slug_api.store.create_app("echo", actor="t")
    # A release phase of a second: the first deploy still holds the app when the second comes.
    archive = archive_of(echo_with_release(tmp_path, "sleep 1")).read_bytes()
    results: list[list[BuildEvent]] = []
    threads = [
        threading.Thread(target=lambda: results.append(upload(slug_api, "echo", archive)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r[-1].build.status for r in results) == ["succeeded", "succeeded"]  # type: ignore[union-attr]
    waited = [
        r
        for r in results
        if any((e.line or "").startswith("-----> Waiting for the build") for e in r)
    ]
    assert len(waited) == 1
    assert sorted(r[-1].build.release for r in results) == [2, 3]  # type: ignore[union-attr]


def test_build_routes_need_a_token(slug_api: LiveApi) -> None:
    response = httpx.post(f"{slug_api.url}/apps/echo/builds", content=b"x")
    assert response.status_code == 401
    assert json.loads(response.text)["error"]["code"] == "missing_token"
