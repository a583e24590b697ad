"""GPUs as the dyno sees them. Kiln tells a dyno how many GPUs its release reserved
(``KILN_GPUS``) and numbers them as the dyno sees them in ``CUDA_VISIBLE_DEVICES`` (a slug: the
host's indices; a container: 0..n-1, its own). A dyno that reserved GPUs and sees none must not
fall back to the CPU without a word: it stops at start, saying what it was given."""

from __future__ import annotations

__all__ = ["GpusMissing", "check_gpus", "reserved_gpus", "torch_device"]

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path


class GpusMissing(RuntimeError):
    pass


def reserved_gpus(env: Mapping[str, str] | None = None) -> int:
    """How many GPUs the release reserved for this dyno (0 when none, or outside Kiln), from
    ``env`` (default: this process's environment)."""
    try:
        return max(int((os.environ if env is None else env).get("KILN_GPUS", "0") or 0), 0)
    except ValueError:
        return 0


def _visible() -> tuple[int, str]:
    """How many GPUs this process can use, and how that was found."""
    if importlib.util.find_spec("torch") is not None:
        import torch

        return int(torch.cuda.device_count()), "torch.cuda.device_count()"
    devices = [d for d in Path("/dev").glob("nvidia[0-9]*") if d.name[len("nvidia") :].isdigit()]
    return len(devices), "/dev/nvidia* device files"


def check_gpus() -> None:
    """Raise GpusMissing when the release reserved GPUs and this process sees none."""
    wanted = reserved_gpus()
    if wanted == 0:
        return
    found, how = _visible()
    if found == 0:
        raise GpusMissing(
            f"this release reserved {wanted} GPU(s) for the dyno (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}), but it sees none ({how} is 0): "
            "the node's GPU driver or container toolkit did not hand it over. Check the node "
            "with `kiln gpus`; the dyno stops rather than run on the CPU"
        )


def torch_device() -> str:
    """``cuda`` where the dyno has a GPU, ``cpu`` where it reserved none; GpusMissing where it
    reserved one and sees none."""
    check_gpus()
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
