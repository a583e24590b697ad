"""``kiln up --detach`` / ``kiln down`` as real processes: token bootstrap, pid file, stop by PID."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from kiln.settings import Settings


def kiln(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "kiln", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_up_detached_serves_the_cli_then_down_stops_it(settings: Settings) -> None:
    home, port = settings.home, str(settings.api_port)
    started = kiln("up", "--detach", "--no-run", "--api-port", port, home=home)
    assert started.returncode == 0, started.stderr
    try:
        assert f"Kiln is up: API http://127.0.0.1:{port}" in started.stdout
        credentials = home / "credentials.json"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        stored = json.loads(credentials.read_text())
        assert stored["api_url"] == f"http://127.0.0.1:{port}" and stored["token"].startswith(
            "kiln_tok_"
        )
        assert kiln("apps:create", "echo", home=home).returncode == 0
        again = kiln("up", "--detach", "--no-run", "--api-port", port, home=home)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        stopped = kiln("down", home=home)
    assert stopped.returncode == 0 and "Stopped the control plane" in stopped.stdout
    assert not (home / "run" / "kiln.pid").exists()
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        raise AssertionError("the API still answers after kiln down")
    except httpx.TransportError:
        pass
    # A restart keeps the data and the CLI's token.
    assert kiln("up", "--detach", "--no-run", "--api-port", port, home=home).returncode == 0
    try:
        listing = kiln("apps", "--json", home=home)
        assert [a["name"] for a in json.loads(listing.stdout)] == ["echo"]
    finally:
        kiln("down", home=home)


def test_down_when_not_running(tmp_path: Path) -> None:
    result = kiln("down", home=tmp_path)
    assert result.returncode == 1 and "Kiln is not running" in result.stderr


def test_up_on_a_busy_port_says_so(settings: Settings) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", settings.api_port))
        busy.listen()
        result = kiln(
            "up", "--detach", "--no-run", "--api-port", str(settings.api_port), home=settings.home
        )
    assert result.returncode == 1
    assert f"port {settings.api_port} on 127.0.0.1 is already in use" in result.stderr
