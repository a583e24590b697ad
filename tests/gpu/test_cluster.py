"""GPU placement facts from a real multi-node Ray (ray.cluster_utils.Cluster, fake GPU nodes):
node resources from the state API, and every node's NVML inventory read on the node itself."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.gpu.capacity import NodeResources, choose_gpu
from kiln.gpu.cluster import GpuCluster
from kiln.manifest import GpuSpec
from kiln.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, str]]:
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE")}
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Set, not defaulted: this cluster has no token, whatever an earlier test left behind (one
    # full run found RAY_AUTH_MODE=token here and every test of this module failed).
    os.environ["RAY_AUTH_MODE"] = "disabled"
    Path("/tmp/ray").mkdir(parents=True, exist_ok=True)  # Cluster records its address there
    dashboard = free_port()
    temp = tempfile.mkdtemp(prefix="kiln-gpus-", dir="/tmp")
    nodes = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": True, "dashboard_host": "127.0.0.1",
                        "dashboard_port": dashboard, "node_ip_address": "127.0.0.1", "temp_dir": temp},
    )  # fmt: skip
    nodes.add_node(
        num_cpus=1, num_gpus=1, resources={"accelerator_type:H100": 1}, node_ip_address="127.0.0.1"
    )
    nodes.add_node(
        num_cpus=1, num_gpus=2, resources={"accelerator_type:A100": 1}, node_ip_address="127.0.0.1"
    )
    nodes.wait_for_nodes()
    try:
        # The tests read RAY_AUTH_MODE when they talk to it: it stays set while they run.
        yield nodes.address, f"http://127.0.0.1:{dashboard}"
    finally:
        nodes.shutdown()
        for key, value in saved.items():  # later tests' clusters are not this one
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def gpus(cluster: tuple[str, str], settings: Settings) -> GpuCluster:
    address, dashboard = cluster
    return GpuCluster(
        settings.model_copy(update={"ray_address": address, "ray_dashboard_url": dashboard})
    )


def test_node_resources_come_from_the_state_api(gpus: GpuCluster) -> None:
    found = sorted((n.gpus, n.accelerator) for n in gpus.resources())
    assert found == [(0.0, None), (1.0, "H100"), (2.0, "A100")]
    spec, reason = choose_gpu((GpuSpec.parse("H100:2"), GpuSpec.parse("A100:2")), gpus.resources())
    assert reason is None and str(spec) == "A100:2"
    assert choose_gpu((GpuSpec.parse("any:4"),), gpus.resources())[1] == (
        "needs 4 x GPU per replica; the largest GPU node has 2 (node 127.0.0.1)"
    )


def test_every_node_reports_its_gpus_or_why_it_has_none(gpus: GpuCluster) -> None:
    inventory = gpus.inventory()
    assert len(inventory) == 3 and len({n.node_id for n in inventory}) == 3
    for node in inventory:  # no NVML on this machine: each node says so, none fails
        assert node.gpus == [] and node.cpu_only_reason == "NVML library not found"
    assert gpus.inventory() is inventory  # cached for a few seconds
    # The inventory and the state API name nodes alike, so GPU memory can be matched to nodes.
    assert {n.node_id for n in inventory} == {n.node_id for n in gpus.resources()}


def test_fits_later_is_not_never(settings: Settings) -> None:
    busy = [NodeResources("gpu-1", 1, "H100")]
    assert choose_gpu((GpuSpec.parse("H100"),), busy) == (GpuSpec.parse("H100"), None)


def test_dynos_on_a_multi_gpu_node_see_their_gpus_numbered_as_they_see_them(
    cluster: tuple[str, str],
) -> None:
    # Two replicas of one GPU each on the node with two: Ray gives them host GPUs 0 and 1. A
    # container handed host GPU 1 sees it as its device 0, so it must be told 0, not 1. (A
    # driver of its own: Ray reads its loopback setting when it is imported.)
    driver = textwrap.dedent(
        """
        import json, sys
        import ray
        from kiln.models import ArtifactKind
        from kiln.run.dyno import gpu_environment

        @ray.remote(num_gpus=1, num_cpus=0, resources={"accelerator_type:A100": 0.001})
        class Replica:
            def environments(self):
                host = [str(g) for g in ray.get_gpu_ids()]
                return {kind.value: gpu_environment(host, kind) for kind in ArtifactKind}

        ray.init(address=sys.argv[1])
        replicas = [Replica.remote() for _ in range(2)]
        print(json.dumps(ray.get([r.environments.remote() for r in replicas], timeout=60)))
        """
    )
    address, _ = cluster
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-c", driver, address], capture_output=True,
                          text=True, timeout=120, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    slugs = sorted(s["slug"]["CUDA_VISIBLE_DEVICES"] for s in seen)
    assert slugs == ["0", "1"]  # processes: the host's indices, one GPU each
    for each in seen:
        assert each["image"] == {"CUDA_VISIBLE_DEVICES": "0", "KILN_GPUS": "1"}
