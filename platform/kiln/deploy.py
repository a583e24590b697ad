"""A deploy, conducted: push (an archive) -> build stage (an artifact) -> release stage (a release
rolling out), with one live log and one build record. The API's builds route (which ``kiln
deploy`` and the git hook both call) is its only caller.

    deployer = Deployer(store, builder, releaser)
    info = deployer.deploy("echo", Path("upload.tar.gz"), actor="me", sink=print)

Deploys of one app run one at a time: a second waits, and says so in its log. A deploy that
fails changes nothing that runs: no release, no add-on, no config; the record says why.
"""

from __future__ import annotations

__all__ = ["BuildQueue", "Deployer"]

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from kiln.builds.builder import Builder, BuildFacts
from kiln.builds.log import BuildLog
from kiln.errors import KilnError, RateLimited
from kiln.models import ArtifactKind, BuildInfo, BuildStatus
from kiln.release.releaser import Releaser
from kiln.sandbox import sandbox_for
from kiln.store import Store
from kiln.store.builds import BuildOutcome

logger = logging.getLogger(__name__)


class BuildQueue:
    """Deploys run on threads of their own, ``workers`` at once and ``queued`` waiting, so the
    API's own threads stay free for everything else; past that, a deploy is refused (429)."""

    def __init__(self, workers: int, queued: int) -> None:
        self.workers = workers
        self.queued = queued
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kiln-deploy")
        self._slots = threading.BoundedSemaphore(workers + queued)

    def check(self) -> None:
        """Raise RateLimited now if a deploy would be refused (before its upload is read)."""
        if self._slots.acquire(blocking=False):
            self._slots.release()
            return
        raise self._full()

    def submit(self, fn: Callable[[], BuildInfo]) -> Future[BuildInfo]:
        if not self._slots.acquire(blocking=False):
            raise self._full()
        future = self._pool.submit(fn)
        future.add_done_callback(lambda _f: self._slots.release())
        return future

    def _full(self) -> RateLimited:
        return RateLimited(
            f"{self.workers} deploys are running and {self.queued} waiting, the most this "
            "platform takes (KILN_MAX_CONCURRENT_BUILDS, KILN_MAX_QUEUED_BUILDS); try again in "
            "a minute",
            retry_after_s=30,
            code="too_many_builds",
        )

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Deployer:
    def __init__(self, store: Store, builder: Builder, releaser: Releaser) -> None:
        self.store = store
        self.builder = builder
        self.releaser = releaser
        self.settings = builder.settings
        self.queue = BuildQueue(
            self.settings.max_concurrent_builds, self.settings.max_queued_builds
        )
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        # The logs of builds in progress, by build id: the dashboard follows them as they grow.
        self.building: dict[int, BuildLog] = {}

    def deploy(
        self,
        app: str,
        archive: Path,
        *,
        actor: str,
        sink: Callable[[str], None] | None = None,
        commit: str | None = None,
        kind: ArtifactKind | None = None,
        canary: int | None = None,
    ) -> BuildInfo:
        """Build an uploaded archive of ``app``'s source and release it; never raises for a
        failed deploy (the result says failed, the log says why). ``kind`` picks image or slug
        (default: the host's default); ``canary`` runs the release on that percent of the
        replicas first (default: the manifest's ``[rollout] canary``)."""
        self.store.get_app(app)  # an unknown app is an error, not a failed build
        self.builder.artifacts_for(kind)  # so is a kind this host cannot build
        log = BuildLog(sink)
        lock = self._lock(app)
        if not lock.acquire(blocking=False):
            log.step(f"Waiting for the build of {app} in progress to finish")
            lock.acquire()
        try:
            return self._deploy(app, archive, actor, log, commit, kind, canary)
        finally:
            lock.release()

    def _lock(self, app: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(app, threading.Lock())

    def _deploy(
        self, app: str, archive: Path, actor: str, log: BuildLog, commit: str | None,
        kind: ArtifactKind | None, canary: int | None,
    ) -> BuildInfo:  # fmt: skip
        record = self.store.builds.start(app, actor=actor, commit=commit)
        self.building[record.id] = log
        try:
            return self._build_and_release(app, record.id, archive, actor, log, kind, canary)
        finally:
            self.building.pop(record.id, None)

    def _build_and_release(
        self, app: str, build_id: int, archive: Path, actor: str, log: BuildLog,
        kind: ArtifactKind | None, canary: int | None,
    ) -> BuildInfo:  # fmt: skip
        started = time.monotonic()
        facts = BuildFacts()
        sandbox = sandbox_for(self.builder.settings, app, self.store.sandbox_id(app))
        try:
            artifact = self.builder.build(app, build_id, archive, log, sandbox=sandbox,
                                          facts=facts, kind=kind)  # fmt: skip
            self.releaser.checkpoint("built")
            manifest_json = facts.manifest.model_dump_json() if facts.manifest else None

            released: list[str] = []

            def whole_log(version: int) -> str:  # written with the release, shown once it is
                released.append(f"Released v{version} in {time.monotonic() - started:.1f}s")
                return log.text() + f"-----> {released[-1]}\n"

            self.releaser.release_build(
                app, build_id=build_id, artifact=artifact, manifest=facts.manifest,
                description=f"Deploy build {build_id} ({facts.runtime} {artifact.kind})",
                actor=actor, log=log, sandbox=sandbox, canary=canary,
                outcome=BuildOutcome(facts.source_digest, facts.runtime, manifest_json, whole_log),
            )  # fmt: skip
            log.step(released[-1])
            self._collect(app)
            return self.store.builds.get(app, build_id)
        except KilnError as exc:
            return self._fail(build_id, log, exc.message, facts)
        except Exception as exc:  # a bug: fail the build, keep the platform up, keep the trace
            logger.exception("build %s of %s crashed", build_id, app)
            message = f"internal error: {type(exc).__name__}: {exc} (see the control plane's log)"
            return self._fail(build_id, log, message, facts)

    def _collect(self, app: str) -> None:
        """After a deploy: the app's artifacts no kept release runs (KILN_KEEP_RELEASES)."""
        try:
            self.releaser.collect(app=app)
        except Exception:  # garbage stays until the next deploy or kiln gc: no failed deploy
            logger.exception("garbage collection after a deploy of %s failed", app)

    def _fail(self, build_id: int, log: BuildLog, message: str, facts: BuildFacts) -> BuildInfo:
        log.error(f"Build failed: {message}")
        log.error("Nothing was released; the app keeps running its current release.")
        return self.store.builds.finish(
            build_id, status=BuildStatus.FAILED, log=log.text(), source_digest=facts.source_digest,
            runtime=facts.runtime,
            manifest=facts.manifest.model_dump_json() if facts.manifest else None,
            error=message.splitlines()[0].rstrip(":"),
        )  # fmt: skip
