"""Run on a GPU machine (no Ray, no network needed): Kiln's NVML inventory against nvidia-smi.

    PYTHONPATH=platform python tests/gpu_checks/check_nvml.py

Prints the inventory and exits non-zero if it disagrees with nvidia-smi on the count, UUIDs,
names or memory of the GPUs.
"""

import json
import subprocess
import sys

from kiln.gpu.inventory import PyNvml, local_inventory


def main() -> int:
    node = local_inventory(PyNvml())
    print(json.dumps(node.model_dump(), indent=2))
    if node.cpu_only_reason:
        print(f"no GPU inventory: {node.cpu_only_reason}", file=sys.stderr)
        return 1
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()  # fmt: skip
    rows = [[part.strip() for part in line.split(",")] for line in smi]
    problems = []
    if len(rows) != len(node.gpus):
        problems.append(f"nvidia-smi lists {len(rows)} GPUs, Kiln {len(node.gpus)}")
    for (index, uuid, name, total_mib), gpu in zip(rows, node.gpus, strict=False):
        if (int(index), uuid, name) != (gpu.index, gpu.uuid, gpu.name):
            problems.append(f"GPU {index}: nvidia-smi {uuid} {name}, Kiln {gpu.uuid} {gpu.name}")
        if abs(int(total_mib) * 2**20 - gpu.memory_total) > 2**20:
            problems.append(
                f"GPU {index}: nvidia-smi {total_mib} MiB, Kiln {gpu.memory_total // 2**20} MiB"
            )
    print("\n".join(problems) or f"OK: {len(rows)} GPU(s) agree with nvidia-smi")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
