"""A whole Kiln, started as a user starts it (``kiln up --detach``) on ports of its own, for the
run stage's end-to-end tests; one per test session, each test using apps of its own."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
from click.testing import CliRunner, Result

from kiln.cli.main import cli
from tests.conftest import free_port


class Platform:
    def __init__(self, home: Path, uv_cache: Path, sandboxes: Path | None = None) -> None:
        self.home = home
        self.ports = {
            name: free_port()
            for name in (
                "api",
                "http",
                "ray",
                "dashboard",
                "agent",
                "stats",
                "metrics",
                "pg",
                "registry",
                "fallback",
            )
        }
        # As a user's shell would have it: no KILN_* of the developer's, and Ray's defaults
        # (token auth) rather than what another test set for a cluster of its own.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("KILN_", "RAY_AUTH_"))}
        self.env.update(
            KILN_HOME=str(home),
            KILN_API_PORT=str(self.ports["api"]),
            KILN_HTTP_PORT=str(self.ports["http"]),
            KILN_RAY_PORT=str(self.ports["ray"]),
            KILN_RAY_DASHBOARD_PORT=str(self.ports["dashboard"]),
            KILN_RAY_AGENT_PORT=str(self.ports["agent"]),
            KILN_UV_CACHE_DIR=str(uv_cache),
            KILN_SANDBOX_DIR=str(sandboxes or home.parent / "sandboxes"),
            KILN_PG_DIR=f"{sandboxes or home.parent / 'sandboxes'}-pg/platform",
            KILN_VECTOR_PORT=str(self.ports["pg"]),
            KILN_REGISTRY_PORT=str(self.ports["registry"]),
            KILN_SERVE_FALLBACK_PORT=str(self.ports["fallback"]),
            RAY_SERVE_HAPROXY_STATS_PORT=str(self.ports["stats"]),
            RAY_SERVE_HAPROXY_METRICS_PORT=str(self.ports["metrics"]),
        )
        self.url = f"http://127.0.0.1:{self.ports['http']}"

    def shell(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``kiln ARGS`` as a separate process (for up and down)."""
        return subprocess.run(
            [sys.executable, "-m", "kiln", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def up(self) -> None:
        result = self.shell("up", "--detach")
        assert result.returncode == 0, result.stdout + result.stderr

    def down(self) -> None:
        self.shell("down")

    def kiln(self, *args: str, ok: bool = True) -> Result:
        """``kiln ARGS`` in this process, as a user's shell would run it."""
        credentials = json.loads((self.home / "credentials.json").read_text())
        env = {"KILN_API_URL": credentials["api_url"], "KILN_TOKEN": credentials["token"]}
        result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    def api(self) -> httpx.Client:
        """A client of the control-plane API, with the token ``kiln up`` stored."""
        credentials = json.loads((self.home / "credentials.json").read_text())
        return httpx.Client(base_url=credentials["api_url"], timeout=30,
                            headers={"Authorization": f"Bearer {credentials['token']}"})  # fmt: skip

    def app_url(self, app: str) -> str:
        return f"{self.url}/{app}"

    def ps(self, app: str) -> dict[str, Any]:
        return json.loads(self.kiln("ps", "-a", app, "--json").output)

    def wait(self, what: str, check: Any, timeout_s: float = 120, every_s: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = check()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(every_s)


class Load:
    """Requests in a loop on a few threads; counts every answer and error."""

    def __init__(self, url: str, threads: int = 2, pause_s: float = 0.05) -> None:
        self.url = url
        self.threads = threads
        self.pause_s = pause_s
        self.results: collections.Counter[object] = collections.Counter()
        self._stop = threading.Event()

    def _worker(self) -> None:
        with httpx.Client(timeout=120) as client:
            while not self._stop.is_set():
                try:
                    self.results[client.get(self.url).status_code] += 1
                except httpx.HTTPError as exc:
                    self.results[type(exc).__name__] += 1
                time.sleep(self.pause_s)

    @contextmanager
    def running(self) -> Iterator[Load]:
        workers = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        try:
            yield self
        finally:
            self._stop.set()
            for worker in workers:
                worker.join(timeout=130)

    @property
    def failures(self) -> dict[object, int]:
        return {k: v for k, v in self.results.items() if k != 200}


def deploy(platform: Platform, directory: Path, app: str, *extra: str, ok: bool = True) -> str:
    result = platform.kiln("deploy", str(directory), "-a", app, *extra, ok=ok)
    return result.output


def dyno_pids(platform: Platform, app: str) -> list[int]:
    """The dyno processes under the app's replica supervisors."""
    pids = []
    for replica in platform.ps(app)["replicas"]:
        if replica["state"] == "RUNNING" and replica["pid"]:
            pids += [c.pid for c in psutil.Process(replica["pid"]).children() if _is_dyno(c)]
    return pids


def _is_dyno(process: psutil.Process) -> bool:
    try:
        return "kiln_runtime" in " ".join(process.cmdline())
    except psutil.Error:  # gone, or killed and not yet reaped (a zombie): no running dyno
        return False
