"""Journey: a cluster of machines. The head (kiln up --cluster, running no dynos itself) and
worker nodes that joined it with kiln nodes:join, each in a network namespace of its own with
an address on a bridge and none of the head's disk. Apps deployed through the head run on the
workers and answer at the head's URL; their slugs and weights travel there; their logs come
home; a drained node and a lost one take no app down."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kiln.bench.hub import FakeHub
from kiln.bench.netns import Bridge, Node, can_make_nodes
from tests.support.apps import EXAMPLES, write_app
from tests.support.platform import Load, Platform, deploy

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(can_make_nodes()), reason=can_make_nodes() or ""),
]


@dataclass
class Cluster:
    kiln: Platform
    bridge: Bridge
    token: str
    nodes: dict[str, Node]
    hidden: list[Path]
    apps: list[str]

    def join(self, number: int, *extra: str) -> Node:
        """A worker with a container engine of its own (it has none of the head's images)."""
        node = Node(self.bridge, number, self.hidden)
        self.nodes[node.name] = node
        node.join(self.bridge.head, self.token, self.kiln.env, "--num-cpus", "4", *extra,
                  engine=True)  # fmt: skip
        return node

    def create(self, app: str) -> str:
        """A public app for one test, destroyed after it (fixture below)."""
        self.kiln.kiln("apps:create", app, "--public")
        self.apps.append(app)
        return app

    def nodes_status(self) -> dict[str, dict[str, object]]:
        return {n["name"]: n for n in json.loads(self.kiln.kiln("nodes", "--json").output)}


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, uv_cache: Path, fake_hub: FakeHub, sandbox_root: Path
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cluster")
    sandboxes = sandbox_root.parent / f"{sandbox_root.name}-cluster"
    bridge = Bridge()
    kiln = Platform(base / "home", uv_cache, sandboxes)
    kiln.env.update(
        HF_ENDPOINT=fake_hub.url,
        KILN_CLUSTER_ADDRESS=bridge.head,
        KILN_RAY_NUM_CPUS="0",  # the head keeps to the platform: dynos run on the nodes
    )
    made = Cluster(kiln, bridge, "", {}, hidden=[sandboxes.parent, base], apps=[])
    try:
        kiln.up()
        made.token = kiln.shell("nodes:token").stdout.strip()
        made.join(1)
        made.join(2, "--num-gpus", "1")  # a GPU node, as Ray counts it (this host has none)
        yield made
    finally:
        for node in made.nodes.values():
            node.remove()
        kiln.down()
        bridge.remove()
        shutil.rmtree(sandboxes, ignore_errors=True)
        shutil.rmtree(f"{sandboxes}-pg", ignore_errors=True)  # the embedded PostgreSQL's


@pytest.fixture(autouse=True)
def _destroy_apps(cluster: Cluster) -> Iterator[None]:
    yield
    while cluster.apps:  # their dynos would crowd the next test's nodes
        app = cluster.apps.pop()
        cluster.kiln.kiln("apps:destroy", app, "--confirm", app, ok=False)


def app_source(tmp_path: Path, name: str, replicas: int, **extra: str) -> Path:
    source = tmp_path / name
    shutil.copytree(EXAMPLES / "echo", source)
    manifest = (source / "kiln.toml").read_text().replace('name = "echo"', f'name = "{name}"')
    manifest = manifest.replace("min_replicas = 0", f"min_replicas = {replicas}").replace(
        "max_replicas = 2", f"max_replicas = {replicas}"
    )
    (source / "kiln.toml").write_text(manifest + "".join(extra.values()))
    return source


def answer(url: str) -> httpx.Response:
    """The app's answer once HAProxy routes to it (right after a deploy it may still 404)."""
    started = time.monotonic()
    deadline = started + 120
    while True:
        response = httpx.get(url, timeout=30)
        if response.status_code == 200 or time.monotonic() > deadline:
            print(
                f"{url} answered {response.status_code} after {time.monotonic() - started:.1f}s",
                response.headers,
                response.text[:200],
            )
            return response
        time.sleep(0.5)


def where(cluster: Cluster, app: str) -> dict[str, int]:
    """How many of the app's dynos each node runs."""
    found = {}
    for name, node in cluster.nodes_status().items():
        count = sum(d.startswith(f"{app}/") for d in node["dynos"])  # type: ignore[attr-defined]
        if count:
            found[name] = count
    return found


def test_apps_run_on_the_nodes_with_their_slug_and_weights_brought_there(
    cluster: Cluster, tmp_path: Path
) -> None:
    kiln = cluster.kiln
    nodes = cluster.nodes_status()
    assert {n: s["state"] for n, s in nodes.items()} == {
        "head": "ALIVE",
        "w1": "ALIVE",
        "w2": "ALIVE",
    }
    assert nodes["head"]["head"] and nodes["w2"]["gpus"] == 1
    cluster.create("spread")
    output = deploy(kiln, app_source(tmp_path, "spread", 2), "spread", "--artifact", "slug")
    assert "v2 is live" in output
    assert answer(f"{kiln.app_url('spread')}/").json() == {"hello": "world"}
    placed = kiln.wait("two dynos on the worker nodes", lambda: (w := where(cluster, "spread"))
                       and sum(w.values()) == 2 and w)  # fmt: skip
    assert "head" not in placed
    for _ in range(20):
        httpx.get(f"{kiln.app_url('spread')}/", timeout=30)

    def logs_from_the_nodes() -> str | None:
        logs = kiln.kiln("logs", "-a", "spread", "-n", "300").output
        return logs if all(f"@{n}]: GET /" in logs for n in placed) else None

    logs = kiln.wait("router lines from every node", logs_from_the_nodes, timeout_s=30)
    for node in placed:  # what the node lacked came from the head, checked
        assert "release[dyno." in logs and f"@{node}]: fetched " in logs
    assert "checked against the head's SHA-256" in logs

    # A model app: its weights reach the node's own cache before its dyno starts.
    cluster.create("weights")
    source = write_app(tmp_path, "weights", {
        "kiln.toml": 'name = "weights"\nruntime = "python"\nmodel = "kiln-test/tiny-llama@main"\n'
                     "[scaling]\nmin_replicas = 1\nmax_replicas = 1\n",
        "requirements.txt": "fastapi\n",
        "main.py":  # the model's config, from the dyno's view of the cache
        "import json, os\nfrom pathlib import Path\nfrom fastapi import FastAPI\napp = FastAPI()\n\n"
        "@app.get('/')\ndef kind() -> str:\n"
        "    folder = Path(os.environ['HF_HUB_CACHE']) / 'models--kiln-test--tiny-llama'\n"
        "    commit = (folder / 'refs' / 'main').read_text().strip()\n"
        "    config = folder / 'snapshots' / commit / 'config.json'\n"
        "    return json.loads(config.read_text())['model_type']\n",
    })  # fmt: skip
    assert "v2 is live" in deploy(kiln, source, "weights", "--artifact", "slug")
    kind = answer(f"{kiln.app_url('weights')}/")
    time.sleep(1)
    release = kiln.kiln("logs", "-a", "weights", "-n", "100").output
    assert kind.status_code == 200 and kind.json() == "llama", release
    assert "fetched models--kiln-test--tiny-llama" in release


def test_a_gpu_app_lands_on_the_gpu_node_and_says_it_sees_no_gpu(
    cluster: Cluster, tmp_path: Path
) -> None:
    kiln = cluster.kiln
    cluster.create("gpu")
    source = app_source(tmp_path, "gpu", 1, gpu='\n[resources]\ngpu = "any:1"\n')
    output = deploy(kiln, source, "gpu", "--artifact", "slug", ok=False)
    # Ray placed it on the node with a GPU; the node has none to hand over, and the dyno says
    # so instead of running on the CPU.
    assert "reserved 1 GPU(s)" in output and "sees none" in output, output
    release = kiln.kiln("logs", "-a", "gpu", "--source", "release", "-n", "200").output
    assert "@w2]: starting v2" in release


def test_a_drained_node_and_a_lost_one_take_no_app_down(cluster: Cluster, tmp_path: Path) -> None:
    kiln = cluster.kiln
    cluster.create("steady")
    assert "v2 is live" in deploy(kiln, app_source(tmp_path, "steady", 2), "steady",
                                  "--artifact", "slug")  # fmt: skip
    kiln.wait("two dynos", lambda: sum(where(cluster, "steady").values()) == 2)
    cluster.join(3, "--num-cpus", "8")
    url = f"{kiln.app_url('steady')}/"

    # Drain one node under load: Serve starts its dynos elsewhere before it stops them there.
    drained = next(iter(where(cluster, "steady")))
    with Load(url).running() as load:
        kiln.kiln("nodes:drain", drained)
        moved = kiln.wait(
            f"the dynos off {drained}",
            lambda: (
                (w := where(cluster, "steady")) and drained not in w and sum(w.values()) == 2 and w
            ),
            timeout_s=180,
        )
        time.sleep(2)
    drain_figures = (sum(load.results.values()), load.failures)
    assert cluster.nodes_status()[drained]["state"] == "DRAINING"

    # Lose a node at once (every process of it killed) under load.
    lost = next(iter(moved))
    with Load(url).running() as load:
        time.sleep(2)
        cluster.nodes[lost].kill()
        kiln.wait(
            f"the dynos of {lost} to run again elsewhere",
            lambda: (w := where(cluster, "steady")) and lost not in w and sum(w.values()) == 2,
            timeout_s=240,
        )
        kiln.wait("the app to answer", lambda: httpx.get(url, timeout=30).status_code == 200)
        time.sleep(2)
    loss_figures = (sum(load.results.values()), load.failures)
    print(f"drain of {drained}: {drain_figures}; loss of {lost}: {loss_figures}")
    assert drain_figures[0] > 0 and loss_figures[0] > 0
    for sent, failed in (drain_figures, loss_figures):  # 0 in every run seen; a bound, not a wish
        assert sum(failed.values()) <= sent * 0.1, (drain_figures, loss_figures)
    assert load.results[200] > 0  # it answered again after the loss
    # Ray declares the node dead after its health checks fail, which can come after its dynos
    # were already running elsewhere.
    kiln.wait(f"Ray to mark {lost} DEAD", lambda: cluster.nodes_status()[lost]["state"] == "DEAD",
              timeout_s=90)  # fmt: skip


def test_a_dyno_on_a_node_reaches_its_vector_store_on_the_head(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The embedded PostgreSQL of a cluster head listens on the cluster address too; the app's
    # own role and password (scram) let it in from another machine.
    kiln = cluster.kiln
    cluster.create("vectors")
    source = write_app(tmp_path, "vectors", {
        "kiln.toml": 'name = "vectors"\nruntime = "python"\naddons = ["vector-store"]\n'
                     "[scaling]\nmin_replicas = 1\nmax_replicas = 1\n",
        "requirements.txt": "psycopg[binary]\n",
        "main.py": "import json, os\nimport psycopg\n\n"
        "def app(environ, start_response):\n"
        "    with psycopg.connect(os.environ['KILN_VECTOR_URL'], connect_timeout=10) as db:\n"
        "        row = db.execute('select current_user, host(inet_server_addr())').fetchone()\n"
        "    start_response('200 OK', [('Content-Type', 'application/json')])\n"
        "    return [json.dumps(list(row)).encode()]\n",
    })  # fmt: skip
    output = deploy(kiln, source, "vectors", "--artifact", "slug")
    assert "v2 is live" in output
    placed = where(cluster, "vectors")
    assert placed and "head" not in placed
    user, server = answer(f"{kiln.app_url('vectors')}/").json()
    assert server == cluster.bridge.head and user != "postgres"  # its own role, over the network


def test_an_image_app_on_a_node_is_pulled_from_the_cluster_registry(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The head's engine builds and pushes to the registry kiln up --cluster runs (TLS with a CA
    # of its own, which kiln up and nodes:join make the engines trust); the node's own engine
    # pulls the image before the dyno starts.
    if not os.environ.get("DOCKER_HOST"):
        pytest.skip("no container engine for image builds (DOCKER_HOST)")
    kiln = cluster.kiln
    cluster.create("imaged")
    output = deploy(kiln, app_source(tmp_path, "imaged", 1), "imaged", "--artifact", "image")
    registry = f"{cluster.bridge.head}:{kiln.ports['registry']}"
    assert f"-----> Pushing {registry}/kiln/imaged:b" in output and "v2 is live" in output, output
    assert answer(f"{kiln.app_url('imaged')}/").json() == {"hello": "world"}
    placed = where(cluster, "imaged")
    assert placed and "head" not in placed
    release = kiln.kiln("logs", "-a", "imaged", "--source", "release", "-n", "200").output
    assert f"pulling {registry}/kiln/imaged:b" in release and "pulled " in release, release
