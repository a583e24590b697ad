"""Whether a release's replicas can ever be placed, and which GPU of a preference list they get."""

import pytest

from kiln.gpu.capacity import NodeResources, choose_gpu, nodes_from_state, with_gpu_memory
from kiln.manifest import GpuSpec, Memory
from kiln.models import GpuInfo, NodeInventory

NODES = [
    NodeResources("head", 0),
    NodeResources("gpu-1", 1, "H100"),
    NodeResources("gpu-2", 4, "A100-80G"),
]


def specs(*texts: str) -> tuple[GpuSpec, ...]:
    return tuple(GpuSpec.parse(t) for t in texts)


def test_cpu_apps_need_nothing() -> None:
    assert choose_gpu((), NODES) == (None, None)


@pytest.mark.parametrize(
    ("wanted", "chosen"),
    [(("H100",), "H100:1"), (("H100:2", "A100-80G:2"), "A100-80G:2"), (("any:0.5",), "any:0.5"),
     (("L4", "any:4"), "any:4")],
)  # fmt: skip
def test_the_first_spec_that_can_fit_is_chosen(wanted: tuple[str, ...], chosen: str) -> None:
    spec, reason = choose_gpu(specs(*wanted), NODES)
    assert reason is None and str(spec) == chosen


def test_too_many_gpus_per_replica_names_the_largest_node() -> None:
    assert choose_gpu(specs("H100:2"), NODES) == (
        None,
        "needs 2 x H100 per replica; the largest H100 node has 1 (node gpu-1)",
    )


def test_a_type_no_node_has() -> None:
    spec, reason = choose_gpu(specs("L4"), NODES)
    assert spec is None and reason == "no node has L4s (the cluster has: A100-80G, H100)"


def test_every_preference_is_explained_when_none_fits() -> None:
    _, reason = choose_gpu(specs("H100:4", "L4"), NODES)
    assert reason is not None and "H100 node has 1" in reason and "no node has L4s" in reason


def test_a_cpu_only_cluster() -> None:
    assert (
        choose_gpu(specs("any:1"), [NodeResources("head", 0)])[1]
        == "no node has GPUs (the cluster has: no GPUs)"
    )


def test_nodes_from_rays_state_api() -> None:
    state = [
        {"node_id": "a1", "node_ip": "10.0.0.1", "state": "ALIVE", "resources_total": {"CPU": 8}},
        {"node_id": "b2", "node_name": "gpu-1", "state": "ALIVE",
         "resources_total": {"CPU": 8, "GPU": 2, "accelerator_type:H100": 1}},
        {"node_id": "c3", "state": "DEAD", "resources_total": {"GPU": 8}},
    ]  # fmt: skip
    assert nodes_from_state(state) == [
        NodeResources("10.0.0.1", 0, node_id="a1"),
        NodeResources("gpu-1", 2, "H100", node_id="b2"),
    ]


GI = 1024**3
SIZED = [
    NodeResources("head", 0, node_id="h"),
    NodeResources("gpu-1", 1, "H100", 80 * GI, "g1"),
    NodeResources("gpu-2", 2, "L4", 24 * GI, "g2"),
]


def test_a_fraction_grows_to_the_share_of_the_gpu_its_memory_is() -> None:
    chosen, reason = choose_gpu(specs("H100:0.1"), SIZED, Memory.parse("20Gi"))
    assert reason is None and chosen == GpuSpec.parse("H100:0.25")  # at most 4 per 80Gi GPU
    chosen, _ = choose_gpu(specs("H100:0.5"), SIZED, Memory.parse("20Gi"))
    assert chosen == GpuSpec.parse("H100:0.5")  # asking for more than the memory share is kept


def test_a_gpu_too_small_for_the_memory_is_passed_over_or_explained() -> None:
    chosen, reason = choose_gpu(specs("L4:0.5", "H100:0.5"), SIZED, Memory.parse("40Gi"))
    assert reason is None and chosen == GpuSpec.parse("H100:0.5")
    chosen, reason = choose_gpu(specs("L4"), SIZED, Memory.parse("40Gi"))
    assert chosen is None
    assert reason == "needs 40Gi of GPU memory per replica; the largest L4 has 24Gi (node gpu-2)"


def test_without_nvml_figures_only_gpus_are_counted() -> None:
    unsized = [NodeResources("gpu-1", 1, "H100", None, "g1")]
    assert choose_gpu(specs("H100:0.1"), unsized, Memory.parse("20Gi")) == (
        GpuSpec.parse("H100:0.1"),
        None,
    )


def test_gpu_memory_comes_from_the_inventory_by_node_id() -> None:
    def gpu(index: int, gib: int) -> GpuInfo:
        return GpuInfo(index=index, uuid=f"GPU-{index}", name="NVIDIA L4",
                       memory_total=gib * GI, memory_used=0)  # fmt: skip

    inventory = [
        NodeInventory(node_id="g2", gpus=[gpu(0, 24), gpu(1, 22)]),
        NodeInventory(node_id="h"),
    ]
    nodes = with_gpu_memory([NodeResources("head", 0, node_id="h"),
                             NodeResources("gpu-2", 2, "L4", node_id="g2")], inventory)  # fmt: skip
    assert [n.gpu_memory for n in nodes] == [None, 22 * GI]  # the smallest GPU of the node
