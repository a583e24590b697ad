"""The control plane's services, wired once: the store, the build and release stages, the deploy
conductor, the reconciler (where it runs apps), the GPU inventory. ``create_app`` takes it, and
routes reach each service through a typed dependency (``kiln.api.deps``).

    platform = Platform(settings)          # or Platform.serving(settings): Ray, PostgreSQL too
    platform.start()                       # recover a stopped deploy, start the reconciler
    ...
    platform.stop()                        # in reverse order

Ray and the embedded PostgreSQL outlive the control plane on purpose: apps keep serving while it
restarts. ``start`` starts them when they are not running; ``kiln down`` stops them.
"""

from __future__ import annotations

__all__ = ["Platform"]

import asyncio

from kiln.access import AuthThrottle
from kiln.addons.api_keys import UsageLedger
from kiln.builds.builder import Builder, choose_artifact_builders
from kiln.deploy import Deployer
from kiln.gpu.cluster import GpuCluster
from kiln.release.canary import CanaryWatcher
from kiln.release.releaser import Releaser
from kiln.route.meter import RequestMeter
from kiln.run.reconciler import Reconciler
from kiln.settings import Settings
from kiln.store import Store
from kiln.ui.session import Sessions


class Platform:
    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        builder: Builder | None = None,
        reconciler: Reconciler | None = None,
    ) -> None:
        self.settings = settings
        self._owns_store = store is None
        self.store = store or Store.open(settings)
        self.reconciler = reconciler
        self.releaser = Releaser(self.store, settings, notify=self._changed)
        self.builder = builder or Builder(settings, choose_artifact_builders(settings))
        self.deployer = Deployer(self.store, self.builder, self.releaser)
        self.gpus = GpuCluster(settings)
        # Canaries are judged where apps run: their figures come from the replicas' lines.
        self.canaries = CanaryWatcher(self.releaser, settings) if reconciler is not None else None
        self.usage = UsageLedger(self.store, settings) if reconciler is not None else None
        self.auth_throttle = AuthThrottle()
        self.meter = RequestMeter(settings.log_dir)
        self.ui_sessions = Sessions()  # the dashboard's signed-in browsers
        self.push_locks: dict[str, asyncio.Lock] = {}
        self.tasks: set[asyncio.Task[None]] = set()  # deploys that go on when a client leaves
        self._started = False

    @classmethod
    def serving(cls, settings: Settings, store: Store) -> Platform:
        """A platform that runs apps: Ray (local, started unless it runs already; or the
        cluster at --ray-address) with Serve, the vector stores' PostgreSQL if there is one,
        and the reconciler."""
        from kiln.addons.postgres import EmbeddedPostgres
        from kiln.run.cluster import LocalRay, ray_headers
        from kiln.run.serve_api import ServeRest

        if settings.cluster_address and not settings.registry:
            from kiln.builds.registry import EmbeddedRegistry

            registry = EmbeddedRegistry(settings)
            if registry.available():
                registry.ensure()
                print(f"-----> Image registry for the cluster's nodes at {registry.address}")
            else:
                print(
                    "-----> No image registry (install docker-registry, or set KILN_REGISTRY): "
                    "image apps run on the head's engine only"
                )
        if settings.ray_address:
            print(
                f"-----> Using the Ray cluster at {settings.ray_address} ({settings.dashboard_url})"
            )
        else:
            ray = LocalRay(settings)
            running = ray.pid()
            where = (
                f"the head of a cluster, on {settings.cluster_address}:{settings.ray_port}"
                if settings.cluster_address
                else "single node, loopback"
            )
            print(
                f"-----> Ray already runs (pid {running}); apps kept serving"
                if running
                else f"-----> Starting Ray ({where})"
            )
            ray.ensure()
            if settings.cluster_address:
                print(
                    f"-----> Other machines join with: kiln nodes:join {settings.cluster_address} "
                    "--token $(kiln nodes:token)   (the token is a secret; print it here)"
                )
        print(f"-----> Apps are served at {settings.apps_url}/<app>/")
        postgres = EmbeddedPostgres(settings)
        if postgres.initialized() and not settings.vector_database_url:
            postgres.ensure()  # vector stores' dynos connect to it
            print(
                f"-----> Vector stores on PostgreSQL at {settings.cluster_address or '127.0.0.1'}:{settings.vector_port}"
            )
        gpus = GpuCluster(settings)
        reconciler = Reconciler(
            store, ServeRest(settings.dashboard_url, headers=ray_headers(settings)), settings,
            nodes=gpus.resources, inventory=gpus.inventory,
        )  # fmt: skip
        return cls(settings, store=store, reconciler=reconciler)

    def _changed(self) -> None:
        """What apps should run changed: reconcile now, not at the next tick."""
        if self.reconciler is not None:
            self.reconciler.poke()

    def start(self) -> None:
        """Undo what a stopped control plane left half-done, then run the reconciler."""
        if self._started:
            return
        self.releaser.recover()
        if self.reconciler is not None:
            self.reconciler.start()
        if self.canaries is not None:
            self.canaries.start()
        if self.usage is not None:
            self.usage.start()
        self._started = True

    def stop(self) -> None:
        if not self._started:
            return
        if self.canaries is not None:
            self.canaries.stop()
        if self.usage is not None:
            self.usage.stop()
        if self.reconciler is not None:
            self.reconciler.stop()
        self.deployer.queue.shutdown()
        if self._owns_store:
            self.store.close()
        self._started = False
