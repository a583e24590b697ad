"""Deploy to live on a fresh worker node, beside the same deploy on the head, in one run: a
head started with ``kiln up --cluster`` and a worker node that joined it (a network and mount
namespace of its own: none of the head's disk), both on this machine. The app is a slug with a
model of ``--weights-mib`` of weights (from a hub on loopback); the release log's lines split
each deploy into the release phase (the head fetches the weights from the hub), bringing the
slug and its virtualenv, bringing the weights (worker only: the head has them) and starting.

    python -m kiln.bench.cluster [--weights-mib 256]        # as root (namespaces)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from kiln.bench.hub import FakeHub
from kiln.bench.netns import Bridge, Node, can_make_nodes
from kiln.run.dyno import free_port

REPO = "kiln-bench/weights"
APP = """import os
from pathlib import Path

app_folder = Path(os.environ["HF_HUB_CACHE"]) / "models--kiln-bench--weights"


def app(environ, start_response):
    commit = (app_folder / "refs" / "main").read_text().strip()
    size = (app_folder / "snapshots" / commit / "weights.bin").stat().st_size
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(size).encode()]
"""


class Head:
    def __init__(self, base: Path, bridge: Bridge, hub: FakeHub) -> None:
        self.home = base / "home"
        ports = {name: free_port() for name in ("api", "http", "ray", "dash", "agent", "st",
                                                "me", "pg", "reg", "fb")}  # fmt: skip
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("KILN_", "RAY_"))}
        self.env.update(
            KILN_HOME=str(self.home), KILN_API_PORT=str(ports["api"]),
            KILN_HTTP_PORT=str(ports["http"]), KILN_RAY_PORT=str(ports["ray"]),
            KILN_RAY_DASHBOARD_PORT=str(ports["dash"]), KILN_RAY_AGENT_PORT=str(ports["agent"]),
            KILN_SANDBOX_DIR=f"/var/lib/kiln/bench-{bridge.name}",
            KILN_PG_DIR=f"/var/lib/kiln/bench-{bridge.name}-pg", KILN_VECTOR_PORT=str(ports["pg"]),
            KILN_REGISTRY_PORT=str(ports["reg"]), KILN_SERVE_FALLBACK_PORT=str(ports["fb"]),
            RAY_SERVE_HAPROXY_STATS_PORT=str(ports["st"]),
            RAY_SERVE_HAPROXY_METRICS_PORT=str(ports["me"]), KILN_CLUSTER_ADDRESS=bridge.head,
            KILN_RAY_NUM_CPUS="2", HF_ENDPOINT=hub.url,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{ports['http']}"

    def kiln(self, *args: str, timeout: float = 600) -> str:
        credentials = self.home / "credentials.json"
        env = dict(self.env)
        if credentials.exists():
            saved = json.loads(credentials.read_text())
            env.update(KILN_API_URL=saved["api_url"], KILN_TOKEN=saved["token"])
        done = subprocess.run([sys.executable, "-m", "kiln", *args], env=env, text=True,
                              capture_output=True, timeout=timeout)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"kiln {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout


def _stamp(line: str) -> float:
    return datetime.fromisoformat(line.split(" ", 1)[0]).timestamp()


def phases(release_log: str) -> dict[str, float]:
    """Seconds of each part of the last deploy, from the release log's lines."""
    lines = [line for line in release_log.splitlines() if re.match(r"\d{4}-", line)]

    def first(pattern: str) -> float | None:
        return next((_stamp(x) for x in lines if re.search(pattern, x)), None)

    def last(pattern: str) -> float | None:
        return next((_stamp(x) for x in reversed(lines) if re.search(pattern, x)), None)

    phase_start = first(r"Release phase: fetching")
    phase_end = first(r"release\[kiln\]: \d+ files,")
    starting = first(r"\]: starting v")
    slug_done = last(r"fetched (?!models--)")
    weights_from = first(r"fetching \S*models--")
    weights_done = first(r"fetched models--")
    ready = first(r"dyno ready at")
    found = {
        "release phase (hub -> head)": (phase_end or 0) - (phase_start or 0),
        "slug + venv + runtime to node": (slug_done - starting) if slug_done and starting else 0.0,
        "weights to node": (weights_done - weights_from) if weights_done and weights_from else 0.0,
    }
    begun = weights_done or slug_done or starting
    found["dyno start to ready"] = (ready - begun) if ready and begun else 0.0
    return found


def deploy(head: Head, name: str, source: Path, cpu: int) -> tuple[float, dict[str, float], str]:
    app = source / name
    app.mkdir()
    (app / "kiln.toml").write_text(
        f'name = "{name}"\nruntime = "python"\nmodel = "{REPO}@main"\n'
        f"[scaling]\nmin_replicas = 1\nmax_replicas = 1\n[resources]\ncpu = {cpu}\n"
    )
    (app / "main.py").write_text(APP)
    head.kiln("apps:create", name, "--public")
    started = time.monotonic()
    head.kiln("deploy", str(app), "-a", name, "--artifact", "slug")
    took = time.monotonic() - started
    log = head.kiln("logs", "-a", name, "-n", "400")
    where = re.search(r"@(\w+)\]: starting", log)
    return took, phases(log), where.group(1) if where else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-mib", type=int, default=256)
    args = parser.parse_args()
    why = can_make_nodes()
    if why:
        raise SystemExit(f"kiln.bench.cluster: {why}")
    base = Path(tempfile.mkdtemp(prefix="kiln-bench-cluster-"))
    model = base / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bench"}')
    with (model / "weights.bin").open("wb") as out:
        for _ in range(args.weights_mib):
            out.write(os.urandom(2**20))
    hub = FakeHub({REPO: model}).start()
    bridge = Bridge()
    head = Head(base, bridge, hub)
    node: Node | None = None
    try:
        head.kiln("up", "--detach", timeout=300)
        on_head = deploy(head, "onhead", base, cpu=1)  # the head has 2 CPUs: it fits there
        node = Node(bridge, 1, [Path("/var/lib/kiln"), base])
        started = time.monotonic()
        token = head.kiln("nodes:token").strip()
        node.join(bridge.head, token, head.env, "--num-cpus", "4")
        joined = time.monotonic() - started
        on_worker = deploy(head, "onworker", base, cpu=3)  # only the worker has 3 free
    finally:
        if node is not None:
            node.remove()
        subprocess.run([sys.executable, "-m", "kiln", "down"], env=head.env, capture_output=True,
                       timeout=300)  # fmt: skip
        bridge.remove()
        hub.stop()
        shutil.rmtree(base, ignore_errors=True)
        for extra in ("", "-pg"):
            shutil.rmtree(f"/var/lib/kiln/bench-{bridge.name}{extra}", ignore_errors=True)
    print(f"kiln.bench.cluster: a slug app with {args.weights_mib} MiB of weights, deploy to live")
    print(f"(the worker joined in {joined:.1f}s)\n")
    print(f"{'':32}{'on the head':>14}{'fresh worker':>14}")
    print(f"{'placed on':32}{on_head[2]:>14}{on_worker[2]:>14}")
    for key in on_head[1]:
        print(f"{key:32}{on_head[1][key]:>13.2f}s{on_worker[1][key]:>13.2f}s")
    print(f"{'kiln deploy, to live':32}{on_head[0]:>13.2f}s{on_worker[0]:>13.2f}s")


if __name__ == "__main__":
    main()
