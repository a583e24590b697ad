"""Journey: things die and the app keeps answering: its dyno (restarted in place) and the control plane."""

import os
import signal
import time
from collections.abc import Callable

import httpx
import psutil
import pytest

from tests.support.apps import APPS, EXAMPLES
from tests.support.platform import Load, Platform, deploy, dyno_pids

pytestmark = pytest.mark.integration


def test_a_killed_dyno_is_restarted_in_place_under_load(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    app = fresh_app(platform, "phoenix")
    deploy(platform, APPS / "streams_sse", app, "--artifact", "slug")
    [before] = dyno_pids(platform, app)
    with Load(f"{platform.app_url(app)}/", threads=2).running() as load:
        time.sleep(0.5)
        os.kill(before, signal.SIGKILL)
        platform.wait(
            "a new dyno",
            lambda: (pids := dyno_pids(platform, app)) and pids != [before],
            timeout_s=20,
            every_s=0.2,
        )
        time.sleep(0.5)
    assert load.failures == {}, load.results
    assert httpx.get(f"{platform.app_url(app)}/").json()["pid"] != before
    assert (
        "exited with code -9; restarting in place"
        in platform.kiln("logs", "-a", app, "--source", "dyno").output
    )


def test_the_control_plane_restarts_while_apps_keep_serving(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    app = fresh_app(platform, "steady")
    deploy(platform, EXAMPLES / "echo", app, "--artifact", "slug")
    pid = int((platform.home / "run" / "kiln.pid").read_text())
    with Load(f"{platform.app_url(app)}/", pause_s=0.1).running() as load:
        os.kill(pid, signal.SIGTERM)
        platform.wait(
            "the control plane to stop",
            lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
        )
        time.sleep(1)
        platform.up()  # Ray is already up: the reconciler converges without redeploying
        time.sleep(3)
    assert load.failures == {} and load.results[200] > 10
    assert [r["state"] for r in platform.ps(app)["replicas"]] == ["RUNNING"]
