"""Journey: deploy, and the app is live on its URL: from a directory (slug and image) and by git push."""

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from kiln.engine import connect_engine
from tests.support.apps import APPS, EXAMPLES
from tests.support.platform import Platform, deploy

pytestmark = pytest.mark.integration


def test_a_deploy_ends_live_on_its_url(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    app = fresh_app(platform, "echo-live")
    output = deploy(platform, EXAMPLES / "echo", app, "--artifact", "slug")
    assert "-----> v2 is live" in output and f"{platform.app_url(app)}/" in output
    assert httpx.get(f"{platform.app_url(app)}/").json() == {"hello": "world"}
    assert httpx.post(f"{platform.app_url(app)}/echo", json={"x": 1}).json() == {"echo": {"x": 1}}
    listing = platform.ps(app)
    assert listing["status"] == "RUNNING" and listing["release"] == 2
    assert [r["state"] for r in listing["replicas"]] == ["RUNNING"]
    releases = platform.kiln("releases", "-a", app, "--json").output
    assert '"status": "succeeded"' in releases

    def logs_with_the_request() -> str | None:
        # Supervisors ship log lines in batches: the router's line for the request comes shortly.
        logs = platform.kiln("logs", "-a", app, "-n", "200").output
        return logs if "GET /echo-live/ 200" in logs else None

    logs = platform.wait("the router's line in the app's log", logs_with_the_request, timeout_s=20)
    assert "router[dyno." in logs
    assert re.search(r" router\[dyno\.\w+@head\]: GET /echo-live/ 200", logs)  # node named
    assert "build[build." in logs and "release[kiln]: v2 is live" in logs
    only_router = platform.kiln("logs", "-a", app, "--source", "router").output
    assert only_router and all(" router[" in line for line in only_router.strip().splitlines())


def test_an_image_release_runs_as_a_container(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    if connect_engine(platform.env.get("DOCKER_HOST")) is None:
        if os.environ.get("KILN_REQUIRE_ENGINE") == "1":
            pytest.fail("KILN_REQUIRE_ENGINE=1 but no container engine answers at DOCKER_HOST")
        pytest.skip("no container engine at DOCKER_HOST")
    app = fresh_app(platform, "boxed")
    output = deploy(platform, EXAMPLES / "echo", app, "--artifact", "image")
    assert "Building image kiln/boxed:b" in output and "-----> v2 is live" in output
    assert httpx.get(f"{platform.app_url(app)}/").json() == {"hello": "world"}
    # Its container started while the replica's new worker imported Serve (kiln.run.early), or
    # the replica got a worker made warm ahead of it (kiln.run.warm) and started it at once.

    def started_fast() -> str | None:
        logs = platform.kiln("logs", "-a", app, "-n", "300").output
        fast = "the dyno started early" in logs or "the replica's worker was warm" in logs
        return logs if fast else None

    platform.wait("an early start or a warm worker in the release log", started_fast,
                  timeout_s=30)  # fmt: skip


def test_git_push_ends_with_a_url_that_answers(
    platform: Platform, fresh_app: Callable[[Platform, str], str], tmp_path: Path
) -> None:
    import json
    import subprocess

    app = fresh_app(platform, "pushy")
    repo = tmp_path / "pushy"
    shutil.copytree(APPS / "streams_sse", repo)
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}  # fmt: skip
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "first"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    token = json.loads((platform.home / "credentials.json").read_text())["token"]
    url = f"http://kiln:{token}@127.0.0.1:{platform.ports['api']}/git/{app}.git"
    pushed = subprocess.run(
        ["git", "push", url, "main"], cwd=repo, env=env, capture_output=True, text=True, timeout=600
    )
    assert pushed.returncode == 0, pushed.stderr
    assert (
        "remote: -----> v2 is live" in pushed.stderr
        and f"{platform.app_url(app)}/" in pushed.stderr
    )
    assert httpx.get(f"{platform.app_url(app)}/").json()["release"] == "v2"
