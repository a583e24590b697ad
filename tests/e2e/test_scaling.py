"""Journey: scaling to a fixed count, to zero and back, with every request answered."""

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.apps import APPS, EXAMPLES
from tests.support.platform import Platform, deploy

pytestmark = pytest.mark.integration


def test_scale_to_zero_and_back_answers_every_request(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
    tmp_path: Path,
) -> None:
    app = fresh_app(platform, "sleepy")
    source = tmp_path / "sleepy"
    shutil.copytree(APPS / "streams_sse", source)
    (source / "kiln.toml").write_text(
        "[scaling]\nmin_replicas = 0\nmax_replicas = 2\nupscale_delay_s = 0\n"
        "downscale_delay_s = 1\ndownscale_to_zero_delay_s = 2\n"
    )
    deploy(platform, source, app, "--artifact", "slug")
    platform.wait("zero replicas", lambda: not platform.ps(app)["replicas"], timeout_s=90)
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: (
                    httpx.get(f"{platform.app_url(app)}/slow?seconds=0.2", timeout=120).status_code
                ),
                range(16),
            )
        )
    assert answers == [200] * 16
    assert platform.ps(app)["replicas"]
    platform.wait("zero again", lambda: not platform.ps(app)["replicas"], timeout_s=90)


def test_scale_sets_a_fixed_count(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    app = fresh_app(platform, "scaled")
    deploy(platform, EXAMPLES / "echo", app, "--artifact", "slug")
    platform.kiln("scale", "2", "-a", app)
    platform.wait(
        "two running", lambda: [r["state"] for r in platform.ps(app)["replicas"]] == ["RUNNING"] * 2
    )
    platform.kiln("scale", "0", "-a", app)
    platform.wait("no application", lambda: platform.ps(app)["status"] == "STOPPED")
    assert httpx.get(f"{platform.app_url(app)}/").status_code == 404
