"""A mend Kiln loads into every Ray worker of its cluster (Ray's ``preload_python_modules``: see
``kiln.run.cluster.ray_environment``) for a defect of Ray Serve on the path of every cold start.

When a request reaches a deployment that runs no replica, Serve's router pushes its load to the
controller at once ("scaled to zero" push), so that the controller starts one without waiting for
the next periodic push. But that push sends the load the router *recorded*, a series sampled every
``metrics_interval_s``, in which the request that just arrived is not yet: the controller sees no
load, and scales up only after the next sample and the next push (0.2-0.7 s here, at Kiln's
0.5 s interval). The mend records a sample just before that push, so it carries the request.

It patches Ray's router module only when a worker imports it (Serve's proxy, a replica that calls
another deployment): any other worker imports nothing more. Where a Ray upgrade renamed what it
patches, it does nothing, and cold starts are as slow as Serve makes them.
"""

from __future__ import annotations

__all__ = ["ROUTER", "install", "mend"]

import sys
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

ROUTER = "ray.serve._private.router"
MENDED = "_kiln_mended"


def mend(router: ModuleType) -> bool:
    """Patch ``RouterMetricsManager`` in Serve's router module; False where it is not as known."""
    manager = getattr(router, "RouterMetricsManager", None)
    should_push: Callable[[Any, int], bool] | None = getattr(
        manager, "should_send_scaled_to_zero_optimized_push", None
    )
    record: Callable[[Any], None] | None = getattr(manager, "_add_autoscaling_metrics_point", None)
    if manager is None or should_push is None or record is None:
        return False
    if getattr(should_push, MENDED, False):
        return True

    def should_push_now(self: Any, curr_num_replicas: int) -> bool:
        if not should_push(self, curr_num_replicas):
            return False
        record(self)  # the push about to go carries the queued request, not the last sample's 0
        return True

    setattr(should_push_now, MENDED, True)
    manager.should_send_scaled_to_zero_optimized_push = should_push_now
    return True


# The import system's protocols, not importlib.abc's classes: importing those costs a worker 16 ms.
class _Loader:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self.inner.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        mend(module)


class _Finder:
    """Finds Serve's router as the other finders do, and mends it once it has run."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != ROUTER:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)  # type: ignore[assignment]  # duck-typed
                return spec
        return None


def install() -> None:
    """Mend Serve's router now if it is imported, else when it is."""
    if ROUTER in sys.modules:
        mend(sys.modules[ROUTER])
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


install()
