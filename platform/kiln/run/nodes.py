"""A Kiln cluster's nodes: the head ``kiln up --cluster`` starts, and the machines that join it
with ``kiln nodes:join HEAD --token T``.

A join token carries what a node's Ray processes (and so its dyno supervisors) need from the
head: where its Ray is, Ray's auth token, and the platform's secret key (supervisors open the
apps' sealed config vars). It is a secret: whoever holds it can run code in the cluster. A
joined node keeps its own state directory (its Ray's temp dir, its copies of slugs and weights,
its sandboxes) and is stopped by PID, like the head (``kiln down``).
"""

from __future__ import annotations

__all__ = [
    "JoinToken", "WorkerNode", "drain", "find_node", "join_token", "local_address", "node_statuses",
]  # fmt: skip

import base64
import binascii
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from kiln.builds.registry import RegistryAccess, registry_access, trust
from kiln.errors import InvalidInput, KilnError, NotFound, Unavailable
from kiln.models import NodeStatus
from kiln.proc import alive, log_tail
from kiln.run.cluster import LocalRay, ray_environment, ray_temp_dir, ray_token, ray_token_path
from kiln.run.serve_api import AppState
from kiln.run.serve_config import FRONT
from kiln.settings import Settings
from kiln.vault import KEY_FILE, load_vault

PREFIX = "kiln-join-"


class JoinToken(BaseModel):
    gcs: str  # host:port of the head's Ray
    ray_token: str | None
    secret_key: str
    registry: dict[str, str] = {}  # KILN_REGISTRY and its credentials, where there is one
    registry_ca: str | None = None  # the embedded registry's CA, for this node's engines

    def encode(self) -> str:
        raw = base64.urlsafe_b64encode(self.model_dump_json().encode()).decode()
        return PREFIX + raw.rstrip("=")

    @classmethod
    def decode(cls, text: str) -> JoinToken:
        text = text.strip()
        try:
            if not text.startswith(PREFIX):
                raise ValueError
            raw = text[len(PREFIX) :]
            return cls.model_validate_json(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except (ValueError, ValidationError, binascii.Error):
            raise InvalidInput(
                "that is not a Kiln join token (it starts with kiln-join-); print one on the "
                "head with kiln nodes:token",
                code="bad_join_token",
            ) from None


def join_token(settings: Settings) -> JoinToken:
    """The token nodes join this head with; only a head started with --cluster has one."""
    if not settings.cluster_address:
        raise KilnError(
            "this platform's Ray listens on loopback only, so no other machine can join it: "
            "start it with kiln up --cluster [ADDRESS]",
            code="not_a_cluster",
        )
    return JoinToken(
        gcs=settings.gcs_address,
        ray_token=ray_token(settings),
        secret_key=load_vault(settings).key_material,
        registry=access.environment() if (access := registry_access(settings)) else {},
        registry_ca=access.ca if access else None,
    )


def local_address(towards: str) -> str:
    """This machine's address on the route to ``towards`` (a host): what the head reaches."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((towards, 9))  # no packet is sent: the kernel picks the route
        return str(probe.getsockname()[0])


def _with_port(head: str, default_port: int) -> str:
    host, _, port = head.rpartition(":") if ":" in head else (head, "", "")
    return f"{host}:{port or default_port}"


class WorkerNode(LocalRay):
    """This machine's Ray worker node in a Kiln cluster (its pid file is where ``kiln down``
    looks for the local Ray, so ``kiln down`` makes it leave)."""

    def join(
        self, token: JoinToken, head: str | None = None, *, address: str | None = None,
        name: str | None = None, num_cpus: float | None = None, num_gpus: float | None = None,
        timeout_s: float = 120.0,
    ) -> tuple[int, str]:  # fmt: skip
        """Start the node and return (PID, its address) once Ray says it joined."""
        running = self.pid()
        if running is not None:
            raise KilnError(
                f"a Ray node already runs from {self.settings.home} (pid {running}); kiln down "
                "--home stops it, or join with another --home",
                code="already_running",
            )
        gcs = _with_port(head, int(token.gcs.rsplit(":", 1)[1])) if head else token.gcs
        host = gcs.rsplit(":", 1)[0]
        address = address or local_address(host)
        self._keep(token)
        if token.registry_ca and token.registry.get("KILN_REGISTRY"):
            trust(RegistryAccess(token.registry["KILN_REGISTRY"], ca=token.registry_ca))
        name = name or socket.gethostname()
        node = self.settings.model_copy(update={"cluster_address": address})
        env = {**ray_environment(node), **token.registry, "KILN_NODE_NAME": name}
        ray = Path(sys.executable).parent / "ray"
        command = [
            str(ray), "start", "--address", gcs, "--block", "--disable-usage-stats",
            "--node-ip-address", address, "--node-name", name,
            "--temp-dir", str(ray_temp_dir(self.settings.home)),
            "--num-cpus", f"{num_cpus if num_cpus is not None else os.cpu_count() or 1:g}",
        ]  # fmt: skip
        if num_gpus is not None:  # else Ray counts the node's GPUs itself
            command += ["--num-gpus", f"{num_gpus:g}"]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,
            )  # fmt: skip
        self.pid_file.write_text(f"{process.pid}\n")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.log.open("rb") as log:
                log.seek(start)
                if b"Ray runtime started" in log.read():
                    return process.pid, address
            if not alive(process.pid):
                self.pid_file.unlink(missing_ok=True)
                raise Unavailable(
                    f"could not join the cluster at {gcs}; Ray's log ({self.log}) ends with:\n"
                    f"{log_tail(self.log)}\nIs the head started with kiln up --cluster, its "
                    "port open to this machine, and the token the head's?",
                    code="join_failed",
                )
            time.sleep(0.25)
        self.stop()
        raise Unavailable(f"Ray did not join {gcs} within {timeout_s:.0f}s; see {self.log}",
                          code="join_timeout")  # fmt: skip

    def _keep(self, token: JoinToken) -> None:
        """The head's Ray token and secret key, where this node's Ray processes read them."""
        for path, value in ((ray_token_path(self.settings), token.ray_token),
                            (self.settings.home / KEY_FILE, token.secret_key)):  # fmt: skip
            if value is None:
                continue
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(value + "\n")


def node_statuses(
    state_nodes: list[dict[str, Any]], apps: dict[str, AppState], draining: set[str]
) -> list[NodeStatus]:
    """Each node Ray knows (its state API's list) with the dynos Serve placed there: the head
    first, then by name; nodes that left are listed last, as DEAD."""
    found: dict[str, NodeStatus] = {}
    for node in state_nodes:
        resources = node.get("resources_total") or {}
        node_id = str(node.get("node_id", ""))
        state = str(node.get("state") or "ALIVE")
        if state == "ALIVE" and node_id in draining:
            state = "DRAINING"
        found[node_id] = NodeStatus(
            name=str(node.get("node_name") or node.get("node_ip") or node_id[:12]),
            node_id=node_id,
            address=str(node.get("node_ip") or ""),
            head=bool(node.get("is_head_node")),
            state=state,
            cpus=float(resources.get("CPU", 0)),
            gpus=float(resources.get("GPU", 0)),
            accelerator=next(
                (k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")), None
            ),
        )
    for app in apps.values():
        if app.name == FRONT:
            continue  # the platform's own answer where no app's route takes a path: not a dyno
        for replica in app.replicas:
            holder = found.get(replica.node_id or "")
            if holder is None or replica.state == "STOPPING":
                continue
            found[holder.node_id] = holder.model_copy(update={
                "dynos": [*holder.dynos, f"{app.name}/{replica.replica_id[:6]}"],
                "cpus_used": holder.cpus_used + app.replica_cpus,
                "gpus_used": holder.gpus_used + app.replica_gpus,
            })  # fmt: skip
    return sorted(found.values(), key=lambda n: (n.state == "DEAD", not n.head, n.name))


def find_node(nodes: list[NodeStatus], wanted: str) -> NodeStatus:
    """The alive node named, addressed or id-prefixed ``wanted``."""
    matches = [
        n for n in nodes if n.state != "DEAD"
        and (wanted in (n.name, n.address) or (len(wanted) >= 6 and n.node_id.startswith(wanted)))
    ]  # fmt: skip
    if len(matches) != 1:
        names = ", ".join(f"{n.name} ({n.address})" for n in nodes if n.state != "DEAD")
        raise NotFound(
            f"{'no' if not matches else 'more than one'} node is {wanted!r}; the cluster has: "
            f"{names or 'none'}",
            code="node_not_found",
        )
    return matches[0]


def drain(settings: Settings, node_id: str, deadline_s: int = 600) -> None:
    """Ask Ray to drain a node: nothing new is placed there, and Serve starts the node's
    replicas on other nodes before it stops them there. Raise if Ray refuses. (A driver
    process of its own: Ray reads its auth settings once per process.)"""
    result = subprocess.run(
        [sys.executable, "-m", "kiln.run.nodes", "drain", settings.gcs_address, node_id,
         str(deadline_s)],
        capture_output=True, text=True, timeout=60, env=ray_environment(settings),
    )  # fmt: skip
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise KilnError(f"Ray would not drain node {node_id[:12]}: {why}", code="drain_refused")


def _drain_here(address: str, node_id: str, deadline_s: int) -> None:
    import ray
    from ray.core.generated import autoscaler_pb2

    client = ray._raylet.GcsClient(address=address)  # type: ignore[attr-defined]
    accepted, why = client.drain_node(
        node_id,
        autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),  # type: ignore[attr-defined]
        "kiln nodes:drain", int(time.time() * 1000) + deadline_s * 1000,
    )  # fmt: skip
    if not accepted:
        sys.exit(why or "refused")


if __name__ == "__main__":
    if sys.argv[1:2] == ["drain"]:
        _drain_here(sys.argv[2], sys.argv[3], int(sys.argv[4]))
