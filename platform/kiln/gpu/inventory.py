"""A node's GPUs through NVML (nvidia-ml-py), behind a small interface with a fake for tests.

A node without NVML (no driver, no GPU) is a CPU-only node, with the reason; not an error.
"""

from __future__ import annotations

__all__ = [
    "FakeNvml",
    "GpuInfo",
    "GpuProcess",
    "NodeInventory",
    "Nvml",
    "NvmlUnavailable",
    "PyNvml",
    "gpus_by_dyno",
    "local_inventory",
]

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from kiln.models import GpuInfo, GpuProcess, NodeInventory, ReplicaGpu

T = TypeVar("T")


class NvmlUnavailable(Exception):
    """NVML cannot be used on this node; the message says why (e.g. "NVML library not found")."""


class Nvml(Protocol):
    def devices(self) -> list[GpuInfo]: ...


class PyNvml:
    """The real NVML, through nvidia-ml-py."""

    def devices(self) -> list[GpuInfo]:
        import pynvml

        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            reason = (
                "NVML library not found"
                if isinstance(exc, pynvml.NVMLError_LibraryNotFound)
                else str(exc)
            )
            raise NvmlUnavailable(reason) from None
        try:
            return [_device(pynvml, index) for index in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()


class FakeNvml:
    """NVML for tests: the GPUs given, or the failure given."""

    def __init__(self, gpus: list[GpuInfo] | None = None, unavailable: str | None = None) -> None:
        self.gpus = gpus or []
        self.unavailable = unavailable

    def devices(self) -> list[GpuInfo]:
        if self.unavailable:
            raise NvmlUnavailable(self.unavailable)
        return [g.model_copy(deep=True) for g in self.gpus]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _maybe(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except Exception:  # a GPU without this counter (or without permission): leave it out
        return None


def _device(pynvml: Any, index: int) -> GpuInfo:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    processes = _maybe(lambda: pynvml.nvmlDeviceGetComputeRunningProcesses(handle)) or []
    return GpuInfo(
        index=index,
        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        memory_total=int(memory.total),
        memory_used=int(memory.used),
        utilization=_maybe(lambda: int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)),
        temperature=_maybe(
            lambda: int(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
        ),
        processes=[GpuProcess(pid=p.pid, memory_used=int(p.usedGpuMemory or 0)) for p in processes],
    )


def _dyno_of(pid: int, proc: Path = Path("/proc")) -> tuple[str, str | None] | None:
    """(app, replica) when the process is a Kiln dyno: the supervisor sets KILN_APP and KILN_DYNO
    in its environment (also for containers: their processes are visible from the node)."""
    try:
        raw = (proc / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    env = dict(
        item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item
    )
    return (env["KILN_APP"], env.get("KILN_DYNO")) if "KILN_APP" in env else None


def local_inventory(nvml: Nvml, node_id: str = "", node_ip: str = "") -> NodeInventory:
    """This node's GPUs, with each GPU process named by its app where it is a dyno."""
    node = NodeInventory(node_id=node_id, node_ip=node_ip, hostname=socket.gethostname())
    try:
        node.gpus = nvml.devices()
    except NvmlUnavailable as exc:
        node.cpu_only_reason = str(exc)
        return node
    for gpu in node.gpus:
        for process in gpu.processes:
            owner = _dyno_of(process.pid)
            if owner is not None:
                process.app, process.replica = owner
    if not node.gpus:
        node.cpu_only_reason = "NVML found no GPUs"
    return node


def gpus_by_dyno(inventory: list[NodeInventory], app: str) -> dict[str, list[ReplicaGpu]]:
    """Each of the app's dynos (``dyno.xxxxxx``) -> the GPUs its processes hold memory on."""
    found: dict[str, dict[str, ReplicaGpu]] = {}
    for node in inventory:
        for gpu in node.gpus:
            for process in gpu.processes:
                if process.app != app or process.replica is None:
                    continue
                mine = found.setdefault(process.replica, {})
                seen = mine.get(gpu.uuid)
                mine[gpu.uuid] = ReplicaGpu(
                    uuid=gpu.uuid, name=gpu.name, memory_total=gpu.memory_total,
                    memory_used=process.memory_used + (seen.memory_used if seen else 0),
                    utilization=gpu.utilization,
                )  # fmt: skip
    return {dyno: list(gpus.values()) for dyno, gpus in found.items()}
