"""Journey: new releases roll out without a failed request, and a release that cannot start leaves the old one serving."""

from collections.abc import Callable

import httpx
import pytest

from tests.support.apps import APPS, EXAMPLES
from tests.support.platform import Load, Platform, deploy

pytestmark = pytest.mark.integration


def test_config_changes_roll_out_without_a_failed_request(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    app = fresh_app(platform, "rolling")
    deploy(platform, APPS / "streams_sse", app, "--artifact", "slug")
    with Load(f"{platform.app_url(app)}/").running() as load:
        platform.kiln("config:set", "-a", app, "GREETING=v3")
        platform.wait(
            "v3 to serve", lambda: httpx.get(f"{platform.app_url(app)}/").json()["greeting"] == "v3"
        )
        platform.wait(
            "v3 to succeed",
            lambda: (
                '"succeeded"' in platform.kiln("releases:info", "v3", "-a", app, "--json").output
            ),
        )
    assert load.failures == {} and load.results[200] > 10


def test_a_release_that_crashes_on_start_fails_and_the_old_one_keeps_serving(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    app = fresh_app(platform, "crashy")
    deploy(platform, EXAMPLES / "echo", app, "--artifact", "slug")
    with Load(f"{platform.app_url(app)}/", pause_s=0.2).running() as load:
        output = deploy(platform, APPS / "crash_on_start", app, "--artifact", "slug", ok=False)
    assert " !     v3 failed to start; the previous release keeps serving." in output
    assert "KeyError: 'DATABASE_URL_THAT_IS_NOT_SET'" in output
    assert load.failures == {} and load.results[200] > 5
    info = platform.kiln("releases:info", "v3", "-a", app).output
    assert "Status:      failed" in info and "exited with code 1 before it was ready" in info
    assert httpx.get(f"{platform.app_url(app)}/").json() == {"hello": "world"}
    # Rollback makes a new release from the good one, explicitly.
    assert "Rollback to v2: release v4" in platform.kiln("rollback", "-a", app).output
    platform.wait(
        "v4 to go live",
        lambda: '"succeeded"' in platform.kiln("releases:info", "v4", "-a", app, "--json").output,
    )
    assert httpx.get(f"{platform.app_url(app)}/").json() == {"hello": "world"}
