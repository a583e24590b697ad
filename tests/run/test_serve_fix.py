"""Kiln's mend of Serve's scale-from-zero push (kiln.run.serve_fix), on Serve's own router: the
push a request at zero replicas triggers must carry that request, or the controller sees no load
and starts a replica only after the next periodic push."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kiln.run.cluster import ray_environment
from kiln.settings import Settings

# A router of the proxy's kind, as Serve makes it, for an app scaled to zero: its last sample
# (recorded while idle) says nothing is queued; then three requests arrive. What do the pushes
# they trigger tell the controller is queued, and how many samples were taken?
BURST = """
import asyncio, contextlib, json, sys
from ray.serve._private import router
from ray.serve._private.common import DeploymentHandleSource, DeploymentID
from ray.serve._private.config import DeploymentConfig
from ray.serve.config import AutoscalingConfig

if sys.argv[1] == "mended":
    import kiln.run.serve_fix  # as Ray's preload_python_modules imports it, before Serve's router

class Gauge:
    def set_default_tags(self, tags): pass
    def set(self, value): pass

async def main():
    manager = router.RouterMetricsManager(
        DeploymentID(name="dyno", app_name="cold"), "handle", "actor", DeploymentHandleSource.PROXY,
        None, Gauge(), Gauge(), Gauge(), asyncio.get_running_loop())
    manager._deployment_config = DeploymentConfig(autoscaling_config=AutoscalingConfig(
        min_replicas=0, max_replicas=2, look_back_period_s=5, metrics_interval_s=0.5))
    pushed = []
    manager.push_autoscaling_metrics_to_controller = lambda: pushed.append(
        max(p.value for p in manager._get_metrics_report().queued_requests))
    manager._add_autoscaling_metrics_point()
    with contextlib.ExitStack() as requests:
        for _ in range(3):
            requests.enter_context(manager.wrap_queued_request(False, 0))
        samples = len(manager.metrics_store.data[router.QUEUED_REQUESTS_KEY])
        print(json.dumps({"pushed": pushed, "samples": samples}))

asyncio.run(main())
"""


def _burst(how: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", BURST, how], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_push_at_zero_replicas_carries_the_request_that_triggered_it() -> None:
    # Serve as it is: the push says nothing is queued. (Where this fails, a Ray upgrade fixed
    # it: the mend can go.)
    assert _burst("as-is") == {"pushed": [0, 0, 0], "samples": 1}
    # Mended: each push carries the load; one sample more for the burst, not one a request.
    assert _burst("mended") == {"pushed": [1, 1, 1], "samples": 2}


def test_every_worker_of_kilns_ray_loads_the_mend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_preload_python_modules", raising=False)
    env = ray_environment(Settings(home=tmp_path))
    assert env["RAY_preload_python_modules"] == "kiln.run.serve_fix,kiln.run.early,kiln.run.warm"
    # An operator's own preloads stay.
    monkeypatch.setenv("RAY_preload_python_modules", "mine")
    env = ray_environment(Settings(home=tmp_path))
    assert (
        env["RAY_preload_python_modules"] == "mine,kiln.run.serve_fix,kiln.run.early,kiln.run.warm"
    )
