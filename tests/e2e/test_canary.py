"""Journey: a canary rollout on a real Kiln. A release takes a quarter of the replicas in place
(no extra ones), is measured beside the one before it, and is promoted; a release that answers
500s is aborted by Kiln itself, and costs no more than its share of the requests."""

import collections
import json
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.platform import Platform

pytestmark = pytest.mark.integration

APP = textwrap.dedent(
    """
    from fastapi import FastAPI, HTTPException

    app = FastAPI()
    VERSION = {version!r}

    @app.get("/")
    def version() -> dict[str, str]:
        if VERSION == "broken":
            raise HTTPException(500, "broken on purpose")
        return {{"version": VERSION}}
    """
)


def app_dir(where: Path, version: str, rollout: str = "") -> Path:
    source = where / version
    source.mkdir()
    (source / "main.py").write_text(APP.format(version=version))
    (source / "requirements.txt").write_text("fastapi\n")
    (source / "kiln.toml").write_text(
        'runtime = "python"\nentrypoint = "main:app"\n[resources]\ncpu = 0.25\n'
        f"[scaling]\nmin_replicas = 4\nmax_replicas = 4\n{rollout}"
    )
    return source


def versions(url: str, count: int, pause_s: float = 0.0) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            response = client.get(url)
            seen[
                response.json()["version"]
                if response.status_code == 200
                else str(response.status_code)
            ] += 1
            time.sleep(pause_s)
    return seen


def test_a_canary_takes_its_share_in_place_and_is_promoted(
    platform: Platform, fresh_app: Callable[[Platform, str], str], tmp_path: Path
) -> None:
    app = fresh_app(platform, "canaried")
    url = f"{platform.app_url(app)}/"
    platform.kiln("deploy", str(app_dir(tmp_path, "one")), "-a", app, "--artifact", "slug")
    replicas = {r["replica"] for r in platform.ps(app)["replicas"]}
    assert len(replicas) == 4
    output = platform.kiln("deploy", str(app_dir(tmp_path, "two")), "-a", app, "--artifact",
                           "slug", "--canary", "25").output  # fmt: skip
    assert "-----> v3 runs as a canary on 25% of the replicas" in output
    platform.wait("the canary to serve", lambda: versions(url, 20)["two"] > 0, timeout_s=60)
    split = versions(url, 400)
    assert split["one"] + split["two"] == 400, split  # no request failed
    assert abs(100 * split["two"] / 400 - 25) <= 10, split
    assert {r["replica"] for r in platform.ps(app)["replicas"]} == replicas  # no extra replica
    shown = json.loads(platform.kiln("canary", "-a", app, "--json").output)
    assert shown["stable"]["release"] == 2 and shown["canary"]["release"] == 3
    platform.wait("the canary's figures", lambda: json.loads(
        platform.kiln("canary", "-a", app, "--json").output)["canary"]["requests"] >= 50)  # fmt: skip
    platform.kiln("canary:promote", "-a", app)
    platform.wait("every replica on v3", lambda: versions(url, 20) == {"two": 20}, timeout_s=120)
    releases = json.loads(platform.kiln("releases", "-a", app, "--json").output)
    assert releases[0]["version"] == 3 and releases[0]["canary"] == 25
    platform.wait("v3 to succeed", lambda: '"succeeded"' in platform.kiln(
        "releases:info", "v3", "-a", app, "--json").output)  # fmt: skip


def test_a_canary_that_answers_500s_is_aborted_by_itself(
    platform: Platform, fresh_app: Callable[[Platform, str], str], tmp_path: Path
) -> None:
    app = fresh_app(platform, "badcanary")
    url = f"{platform.app_url(app)}/"
    platform.kiln("deploy", str(app_dir(tmp_path, "one")), "-a", app, "--artifact", "slug")
    rollout = '[rollout]\ncanary = 25\nauto = "10m"\nmin_requests = 10\n'
    platform.kiln("deploy", str(app_dir(tmp_path, "broken", rollout)), "-a", app,
                  "--artifact", "slug")  # fmt: skip
    seen: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + 120
    while '"failed"' not in platform.kiln("releases:info", "v3", "-a", app, "--json").output:
        assert time.monotonic() < deadline, f"the canary was not aborted; answers: {seen}"
        seen += versions(url, 20, pause_s=0.02)
    info = json.loads(platform.kiln("releases:info", "v3", "-a", app, "--json").output)
    assert info["status_message"].startswith("canary aborted: ")
    assert "of its answers were 5xx" in info["status_message"]
    # What it cost: its share of the requests while it was judged, no more.
    total = sum(seen.values())
    assert seen["500"] <= 0.35 * total + 5, seen
    platform.wait("every replica back on v2", lambda: versions(url, 20) == {"one": 20},
                  timeout_s=60)  # fmt: skip
    logs = platform.kiln("logs", "-a", app, "--source", "release", "-n", "400").output
    assert "canary v3 aborted by kiln (rollout.auto)" in logs
