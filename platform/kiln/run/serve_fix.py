"""A mend Kiln loads into every Ray worker of the cluster it starts (Ray's
``preload_python_modules``: see ``kiln.run.cluster.ray_environment``) for a defect of Ray Serve on
the path of every cold start.

When a request reaches a deployment that runs no replica, Serve's router pushes its load to the
controller at once ("scaled to zero" push), so that the controller starts one without waiting for
the next periodic push. But that push sends the load the router *recorded*, a series sampled every
``metrics_interval_s``, in which the request that just arrived is not yet: the controller sees no
load, and scales up only after the next sample and the next push (0.2-0.7 s here, at Kiln's
0.5 s interval). The mend records a sample just before that push, so it carries the request; once
per burst (while the last sample already shows load, a push carries it anyway).

Serve's router module is patched when a worker imports it (``import ray.serve`` does: the proxy,
the controller, every replica); other workers import nothing more. Where a Ray upgrade renamed or
reshaped what it patches, it does nothing; should it fail, the request goes on as Serve would
have it, and only the cold start is as slow as before.
"""

from __future__ import annotations

__all__ = ["MENDED", "ROUTER", "install", "mend"]

import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

ROUTER = "ray.serve._private.router"
MENDED = "_kiln_mended"

logger = logging.getLogger(__name__)


def mend(router: ModuleType) -> bool:
    """Patch ``RouterMetricsManager`` in Serve's router module; False where it is not as known."""
    manager = getattr(router, "RouterMetricsManager", None)
    should_push: Callable[..., bool] | None = getattr(
        manager, "should_send_scaled_to_zero_optimized_push", None
    )
    record: Callable[[Any], None] | None = getattr(manager, "_add_autoscaling_metrics_point", None)
    queued = getattr(router, "QUEUED_REQUESTS_KEY", None)
    if manager is None or should_push is None or record is None or queued is None:
        return False
    if inspect.iscoroutinefunction(record) or inspect.iscoroutinefunction(should_push):
        return False
    if getattr(should_push, MENDED, False):
        return True

    def should_push_now(self: Any, *args: Any, **kwargs: Any) -> bool:
        if not should_push(self, *args, **kwargs):
            return False
        try:
            if not self.metrics_store.get_latest(queued):  # the last sample shows no load
                record(self)  # the push about to go carries the queued request
        except Exception:  # Serve's push goes on as it would have
            logger.debug("could not record a sample before Serve's push", exc_info=True)
        return True

    setattr(should_push_now, MENDED, True)
    manager.should_send_scaled_to_zero_optimized_push = should_push_now
    return True


# The import system's protocols, not importlib.abc's classes: importing those costs a worker 16 ms.
class _Loader:
    """Serve's own loader for the router, mending the module once it has run."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:  # get_source, get_code ...: the inner loader's
        return getattr(self.inner, name)

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self.inner.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        try:
            mend(module)
        except Exception:  # never the reason Serve cannot be imported
            logger.debug("could not mend %s", ROUTER, exc_info=True)


class _Finder:
    """Finds Serve's router as the other finders do, and hands back a mending loader."""

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
