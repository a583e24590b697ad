"""kiln metrics: an app's requests over a window, from its routers' lines."""

import json
import time
from pathlib import Path

import pytest

from kiln.run.logs import append_records
from tests.cli.test_commands import Kiln
from tests.conftest import LiveApi
from tests.route.test_figures import router


def test_kiln_metrics_prints_the_last_hour_of_an_apps_requests(
    kiln: Kiln,
    live_api: LiveApi,
) -> None:
    kiln("apps:create", "chat")
    now = time.time()
    append_records(live_api.settings.log_dir, "chat", [
        router("GET / 200 1.0ms", ts=now - 7200),  # two hours ago: outside the window
        *(router(f"GET / 200 {ms}.0ms", ts=now - 30) for ms in range(10, 20)),
        router("GET / 502 3.0ms", ts=now - 20),
    ])  # fmt: skip
    printed = kiln("metrics", "-a", "chat").output
    assert "=== chat: the last 1h, 0 replica(s) running" in printed
    assert "all" in printed and "v2" in printed and "502" not in printed
    data = json.loads(kiln("metrics", "-a", "chat", "--since", "3h", "--json").output)
    assert data["total"]["requests"] == 12 and data["total"]["status"]["5xx"] == 1
    assert json.loads(kiln("metrics", "-a", "chat", "--json").output)["total"]["requests"] == 11
    assert "No requests in the last 10s" in kiln("metrics", "-a", "chat", "--since", "10s").output
    assert "--since" in kiln("metrics", "-a", "chat", "--since", "soon", ok=False).output


def test_kiln_open_dashboard_opens_the_apps_page_on_the_control_plane(
    kiln: Kiln, live_api: LiveApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    import webbrowser

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", opened.append)
    monkeypatch.chdir(tmp_path)  # no kiln.toml here: -a names the app, or none
    kiln("apps:create", "chat")
    assert kiln("open", "-a", "chat", "--dashboard").output.strip().endswith("/ui/apps/chat")
    assert kiln("open", "--dashboard").output.strip().endswith("/ui/")
    assert opened[0].startswith("http://127.0.0.1:") and opened[0].endswith("/ui/apps/chat")
