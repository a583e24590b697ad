"""A node's GPUs through the NVML interface: the fake for placement tests, the real one here."""

import os
import subprocess
import sys

from kiln.gpu.inventory import (
    FakeNvml,
    GpuInfo,
    GpuProcess,
    PyNvml,
    gpus_by_dyno,
    local_inventory,
)


def h100(index: int, *pids: int) -> GpuInfo:
    return GpuInfo(index=index, uuid=f"GPU-{index}", name="NVIDIA H100 80GB HBM3", memory_total=80 * 2**30,
                   memory_used=2 * 2**30, utilization=7, temperature=40,
                   processes=[GpuProcess(pid=p, memory_used=2**30) for p in pids])  # fmt: skip


def test_a_node_without_nvml_is_cpu_only_with_the_reason() -> None:
    node = local_inventory(FakeNvml(unavailable="NVML library not found"), "n1", "10.0.0.1")
    assert node.gpus == [] and node.cpu_only_reason == "NVML library not found"


def test_this_machine_has_no_nvml_and_says_so() -> None:
    node = local_inventory(PyNvml())
    assert node.cpu_only_reason is not None or node.gpus  # a GPU machine lists its GPUs instead


def test_gpu_processes_are_named_by_their_app_and_dyno() -> None:
    env = {**os.environ, "KILN_APP": "chat", "KILN_DYNO": "dyno.abc123"}
    dyno = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        node = local_inventory(FakeNvml([h100(0, dyno.pid, other.pid), h100(1)]))
    finally:
        dyno.kill()
        other.kill()
    first = node.gpus[0].processes
    assert (first[0].app, first[0].replica) == ("chat", "dyno.abc123")
    assert (first[1].app, first[1].replica) == (None, None)
    assert node.cpu_only_reason is None and len(node.gpus) == 2
    used = gpus_by_dyno([node], "chat")  # what kiln ps shows for the app's dynos
    assert list(used) == ["dyno.abc123"]
    assert [(g.uuid, g.memory_used, g.utilization) for g in used["dyno.abc123"]] == [
        ("GPU-0", 2**30, 7)
    ]
