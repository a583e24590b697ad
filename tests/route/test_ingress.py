"""Serve's HAProxy through Kiln's wrapper: before any route exists a request gets a 503 with
Retry-After in Kiln's JSON, never Serve's 404. Run for real: Ray's own config generator, the
HAProxy binary ray[serve] bundles, HTTP on loopback."""

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from kiln.route.ingress import RETRY_AFTER_S, STARTING_CODE, WRAPPER_NAME, rewrite, write_wrapper
from kiln.run.cluster import _haproxy_binary
from tests.conftest import free_port


def serves_config(directory: Path, port: int) -> Path:
    """Serve's HAProxy config before any application has a route, as Serve writes it."""
    from ray.serve._private.haproxy import HAProxyApi, HAProxyConfig
    from ray.serve.config import HTTPOptions

    config = HAProxyConfig(
        socket_path=str(directory / "admin.sock"), server_state_base=str(directory),
        server_state_file=str(directory / "state"), metrics_enabled=False,
        metrics_socket_path=str(directory / "metrics.sock"), stats_port=free_port(),
        metrics_port=free_port(), http_options=HTTPOptions(host="127.0.0.1", port=port),
    )  # fmt: skip
    api = HAProxyApi(config, config_file_path=str(directory / "haproxy.cfg"))
    api._generate_config_file_internal()
    return directory / "haproxy.cfg"


def test_before_any_route_exists_a_request_is_told_to_retry_not_that_nothing_is_there(
    tmp_path: Path,
) -> None:
    real = _haproxy_binary()
    assert real is not None, "ray[serve] bundles HAProxy"
    wrapper = write_wrapper(tmp_path, real)
    for attempt in range(3):  # the free ports it was given can be taken before it binds them
        port = free_port()
        config = serves_config(tmp_path, port)
        assert "return status 404" in config.read_text()  # what Serve alone would answer
        # As Serve starts it: the binary it was told of, -db -f CONFIG.
        process = subprocess.Popen([str(wrapper), "-db", "-f", str(config)],
                                   start_new_session=True)  # fmt: skip
        response = _first_answer(process, port)
        if response is not None or attempt == 2:
            break
    try:
        assert response is not None, "HAProxy exited on the rewritten config"
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == str(RETRY_AFTER_S)
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == STARTING_CODE and "try again" in error["message"]
        # The same process Serve started (it signals and reloads HAProxy by this pid), with
        # Serve's own -f CONFIG (it finds its HAProxy processes by that path).
        assert Path(f"/proc/{process.pid}/exe").resolve() == Path(real).resolve()
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert str(config).encode() in cmdline
        assert "return status 503" in config.read_text()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def _first_answer(process: subprocess.Popen[bytes], port: int) -> httpx.Response | None:
    """HAProxy's answer once it listens on ``port``; None if it exited first."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/chat/v1/models", timeout=2)
        except httpx.TransportError:
            if process.poll() is not None:
                return None
            if time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGTERM)
                raise AssertionError("HAProxy never listened") from None
            time.sleep(0.05)


def test_a_config_without_serves_404_is_run_as_serve_wrote_it() -> None:
    config = "frontend f\n    bind 127.0.0.1:1\n    default_backend b\nbackend b\n    server s 127.0.0.1:2\n"
    assert rewrite(config) == config


def test_the_wrapper_never_wraps_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Processes Ray starts inherit the wrapper's path; one that computes Ray's environment again
    # must still find the real binary, or HAProxy would exec the wrapper forever.
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(tmp_path / WRAPPER_NAME))
    found = _haproxy_binary()
    assert found is not None and Path(found).name != WRAPPER_NAME
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", "/opt/haproxy/sbin/haproxy")
    assert _haproxy_binary() == "/opt/haproxy/sbin/haproxy"  # an operator's choice is kept
