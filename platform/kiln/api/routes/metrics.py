"""``/metrics``: Prometheus text for what runs: each app's requests by release (counts by
status code, latency and time-to-first-token histograms, requests in flight, replica starts and
their split: ``kiln.route.meter``); replicas per app and state; for apps that
reserve GPUs, each dyno's GPU memory and the GPUs' utilisation (NVML on every node); for vLLM
dynos, the engine's own ``vllm:*`` figures with ``app`` and ``dyno`` labels.

Scrape it with the platform token as a bearer token (Prometheus's ``authorization`` setting).
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from kiln.api.deps import GpusDep, MeterDep, ReconcilerDep, SettingsDep, StoreDep
from kiln.errors import KilnError
from kiln.models import LlmFigures, NodeInventory
from kiln.run.engine_metrics import COUNTERS, GAUGES, HISTOGRAMS, latest, llm_apps
from kiln.run.reconciler import Reconciler

router = APIRouter(tags=["metrics"])


class _Snapshot:
    """A collector over one reading of Serve's status and the nodes' GPUs."""

    def __init__(
        self, reconciler: Reconciler, inventory: list[NodeInventory],
        engines: dict[str, dict[str, LlmFigures]],
    ) -> None:  # fmt: skip
        self.reconciler = reconciler
        self.inventory = inventory
        self.engines = engines

    def collect(self) -> Iterator[Metric]:
        replicas = GaugeMetricFamily(
            "kiln_app_replicas", "Replicas of each app by state, as Ray Serve reports them.",
            labels=["app", "state"],
        )  # fmt: skip
        for app, state in sorted(self.reconciler.last_status.items()):
            counts: dict[str, int] = {}
            for replica in state.replicas:
                counts[replica.state] = counts.get(replica.state, 0) + 1
            for replica_state, count in sorted(counts.items()):
                replicas.add_metric([app, replica_state], count)
        yield replicas
        memory = GaugeMetricFamily(
            "kiln_dyno_gpu_memory_used_bytes", "GPU memory held by a dyno's processes.",
            labels=["app", "dyno", "node", "gpu"],
        )  # fmt: skip
        utilization = GaugeMetricFamily(
            "kiln_gpu_utilization_percent",
            "Percent of time a kernel ran on a GPU (last NVML sample), with the app using it.",
            labels=["node", "gpu", "name", "app"],
        )
        for node in self.inventory:
            for gpu in node.gpus:
                apps = sorted({p.app for p in gpu.processes if p.app}) or [""]
                if gpu.utilization is not None:
                    for app in apps:
                        utilization.add_metric(
                            [node.node_ip, gpu.uuid, gpu.name, app], gpu.utilization
                        )
                held: dict[tuple[str, str], int] = {}
                for process in gpu.processes:
                    if process.app and process.replica:
                        key = (process.app, process.replica)
                        held[key] = held.get(key, 0) + process.memory_used
                for (app, dyno), used in sorted(held.items()):
                    memory.add_metric([app, dyno, node.node_ip, gpu.uuid], used)
        yield memory
        yield utilization
        yield from self._engines()

    def _engines(self) -> Iterator[Metric]:
        """vLLM's own figures of each llm dyno, as its supervisor last read them, labelled with
        the app and the dyno (summed over the engine's models and adapters)."""
        labels = ["app", "dyno"]
        gauges = {n: GaugeMetricFamily(n, h, labels=labels) for n, h in GAUGES.items()}
        counters = {n: CounterMetricFamily(n, h, labels=labels) for n, h in COUNTERS.items()}
        histograms = {n: SummaryMetricFamily(n, h, labels=labels) for n, h in HISTOGRAMS.items()}
        for app, dynos in sorted(self.engines.items()):
            for dyno, figures in sorted(dynos.items()):
                raw = figures.raw
                for name, family in gauges.items():
                    if name in raw:
                        family.add_metric([app, dyno], raw[name])
                for name, counter in counters.items():
                    if f"{name}_total" in raw:
                        counter.add_metric([app, dyno], raw[f"{name}_total"])
                for name, summary in histograms.items():
                    if f"{name}_count" in raw:
                        summary.add_metric(
                            [app, dyno], int(raw[f"{name}_count"]), raw.get(f"{name}_sum", 0.0)
                        )
        yield from (*gauges.values(), *counters.values(), *histograms.values())


@router.get("/metrics", response_class=Response)
def metrics(
    reconciler: ReconcilerDep,
    gpus: GpusDep,
    store: StoreDep,
    settings: SettingsDep,
    meter: MeterDep,
) -> Response:
    applied = (reconciler.applied or {}).get("applications", [])
    uses_gpus = any(
        d.get("ray_actor_options", {}).get("num_gpus") for a in applied for d in a["deployments"]
    )
    inventory: list[NodeInventory] = []
    if uses_gpus:  # NVML is read on every node (a driver: seconds); only when it can matter
        try:
            inventory = gpus.inventory()
        except KilnError:
            inventory = []  # the replica counts still come out
    running = set(reconciler.last_status) & llm_apps(store.deployables())
    engines = {app: latest(settings.log_dir, app) for app in running}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(meter.collector(app.name for app in store.list_apps()))
    registry.register(_Snapshot(reconciler, inventory, engines))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
