"""The cluster's GPUs as the control plane sees them: inventories from every node (through a
short-lived driver subprocess, cached briefly) and node resources (from Ray's state API)."""

from __future__ import annotations

__all__ = ["GpuCluster"]


import subprocess
import sys
import threading
import time
from typing import Any

import httpx
from pydantic import TypeAdapter

from kiln.errors import Unavailable
from kiln.gpu.capacity import NodeResources, nodes_from_state
from kiln.models import NodeInventory
from kiln.settings import Settings

_NODES = TypeAdapter(list[NodeInventory])


class GpuCluster:
    def __init__(self, settings: Settings, cache_s: float = 5.0) -> None:
        self.settings = settings
        self.cache_s = cache_s
        self._inventory: tuple[float, list[NodeInventory]] | None = None
        self._lock = threading.Lock()
        self.draining: set[str] = set()  # node ids kiln nodes:drain was asked to empty

    def address(self) -> str:
        return self.settings.gcs_address

    def inventory(self) -> list[NodeInventory]:
        """Every node's GPUs (NVML), read on the nodes themselves."""
        with self._lock:
            if self._inventory and time.monotonic() - self._inventory[0] < self.cache_s:
                return self._inventory[1]
            from kiln.run.cluster import ray_environment

            result = subprocess.run(
                [sys.executable, "-m", "kiln.gpu.collect", self.address()],
                capture_output=True, text=True, timeout=120, env=ray_environment(self.settings),
            )  # fmt: skip
            if result.returncode != 0:
                raise Unavailable(
                    f"could not read the nodes' GPUs from Ray at {self.address()}: "
                    f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}",
                    code="inventory_failed",
                )
            nodes = _NODES.validate_json(result.stdout.strip().splitlines()[-1])
            self._inventory = (time.monotonic(), nodes)
            return nodes

    def resources(self) -> list[NodeResources]:
        """Alive nodes' GPU counts and types, from Ray's state API (cheap: no driver)."""
        return nodes_from_state(self.state_nodes())

    def state_nodes(self) -> list[dict[str, Any]]:
        """Every node Ray knows, alive or dead, as its state API lists them."""
        from kiln.run.cluster import ray_headers

        try:
            response = httpx.get(
                f"{self.settings.dashboard_url}/api/v0/nodes", params={"detail": 1}, timeout=10,
                headers=ray_headers(self.settings),
            )  # fmt: skip
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"Ray's state API did not answer: {exc}", code="state_unavailable"
            ) from None
        nodes: list[dict[str, Any]] = response.json()["data"]["result"]["result"]
        return nodes
