"""``python -m kiln.gpu.collect ADDRESS``: every Ray node's GPU inventory, as JSON on stdout.

A short-lived Ray driver runs one task pinned to each alive node (the "small agent per node"),
which reads NVML there. The control plane runs this as a subprocess, so it never becomes a Ray
driver itself (it must outlive Ray restarts).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any


def main() -> None:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from kiln.gpu.inventory import PyNvml, local_inventory

    ray.init(
        address=sys.argv[1], namespace="kiln", logging_level=logging.ERROR, log_to_driver=False
    )

    @ray.remote(num_cpus=0)
    def inventory(node_id: str, node_ip: str) -> dict[str, Any]:
        return local_inventory(PyNvml(), node_id, node_ip).model_dump()

    alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    refs = [
        inventory.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(n["NodeID"], n.get("NodeManagerAddress", ""))
        for n in alive
    ]
    print(json.dumps(ray.get(refs, timeout=60)))
    ray.shutdown()


if __name__ == "__main__":
    main()
