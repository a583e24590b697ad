"""One build, start to finish: upload -> source -> plan -> artifact -> release, with a live log.

    builder = Builder(store, settings, SlugBuilder(settings))
    info = builder.build("echo", Path("upload.tar.gz"), actor="me", sink=print)

Builds of one app run one at a time: a second waits, and says so in its log. A failed build
changes nothing that runs: no release is made.
"""

from __future__ import annotations

__all__ = ["Builder", "choose_artifact_builders"]

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kiln.builds.artifacts import ArtifactBuilder, BuildJob
from kiln.builds.engine import connect_engine
from kiln.builds.image import ImageBuilder
from kiln.builds.log import BuildFailed, BuildLog
from kiln.builds.runtimes import plan_build
from kiln.builds.slug import SlugBuilder
from kiln.builds.source import SourceLimits, extract, tree_digest
from kiln.errors import InvalidInput, KilnError, ManifestError, Unavailable
from kiln.manifest import Manifest, load_manifest
from kiln.models import Artifact, ArtifactKind, BuildInfo, BuildStatus
from kiln.run.serve_config import manifest_refusal
from kiln.sandbox import Sandbox, sandbox_for
from kiln.settings import ArtifactChoice, Settings
from kiln.store import Store
from kiln_runtime.plan import DirectorySource

logger = logging.getLogger(__name__)


def choose_artifact_builders(settings: Settings) -> list[ArtifactBuilder]:
    """The kinds of artifact this host can build, the default first: images where a Docker API
    engine answers (unless KILN_BUILDER=slug), and slugs (they need only Python) unless
    KILN_ALLOW_SLUGS=false."""
    slugs: list[ArtifactBuilder] = [SlugBuilder(settings)] if settings.allow_slugs else []
    if settings.builder == ArtifactChoice.SLUG:
        if not slugs:
            raise InvalidInput(
                "KILN_BUILDER=slug, but KILN_ALLOW_SLUGS=false turns slugs off; pick one",
                code="slugs_disabled",
            )
        return slugs
    engine = connect_engine(settings.resolved_docker_host)
    if engine is not None:
        return [ImageBuilder(engine, settings), *slugs]
    if settings.builder == ArtifactChoice.IMAGE:
        raise Unavailable(
            f"KILN_BUILDER=image, but no container engine answers at "
            f"{settings.resolved_docker_host or 'the default Docker socket'}; start dockerd or "
            "podman system service, set DOCKER_HOST, or use KILN_BUILDER=slug",
            code="no_engine",
        )
    if not slugs:
        raise Unavailable(
            "slugs are turned off (KILN_ALLOW_SLUGS=false) and no container engine answers at "
            f"{settings.resolved_docker_host or 'the default Docker socket'}; start dockerd or "
            "podman system service, or set DOCKER_HOST",
            code="no_engine",
        )
    return slugs


class Builder:
    def __init__(
        self, store: Store, settings: Settings, artifacts: ArtifactBuilder | list[ArtifactBuilder]
    ) -> None:
        self.store = store
        self.settings = settings
        self.kinds = artifacts if isinstance(artifacts, list) else [artifacts]
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def build(
        self,
        app: str,
        archive: Path,
        *,
        actor: str,
        sink: Callable[[str], None] | None = None,
        commit: str | None = None,
        kind: ArtifactKind | None = None,
    ) -> BuildInfo:
        """Build an uploaded archive of ``app``'s source and release it; never raises for a
        failed build (the result says failed, the log says why). ``kind`` picks image or slug
        (default: the host's default)."""
        self.store.get_app(app)  # an unknown app is an error, not a failed build
        artifacts = self.artifacts_for(kind)
        log = BuildLog(sink)
        lock = self._lock(app)
        if not lock.acquire(blocking=False):
            log.step(f"Waiting for the build of {app} in progress to finish")
            lock.acquire()
        try:
            return self._build(app, archive, actor, log, commit, artifacts)
        finally:
            lock.release()

    def artifacts_for(self, kind: ArtifactKind | None) -> ArtifactBuilder:
        for builder in self.kinds:
            if kind is None or builder.kind == kind:
                return builder
        raise InvalidInput(
            f"this platform cannot build {kind} artifacts here (it builds: "
            f"{', '.join(b.kind for b in self.kinds)}); an image needs a container engine",
            code="artifact_unavailable",
        )

    def _lock(self, app: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(app, threading.Lock())

    def _build(
        self, app: str, archive: Path, actor: str, log: BuildLog, commit: str | None,
        artifacts: ArtifactBuilder,
    ) -> BuildInfo:  # fmt: skip
        record = self.store.builds.start(app, actor=actor, commit=commit)
        started = time.monotonic()
        log.step(f"Build {record.id} of {app}, as {artifacts.describe()}")
        workdir = Path(tempfile.mkdtemp(prefix=f"build-{record.id}-", dir=self._scratch()))
        digest = runtime = manifest_json = None
        try:
            source = workdir / "source"
            source.mkdir()
            files = extract(archive, source, SourceLimits(max_bytes=self.settings.max_source_bytes))
            digest = tree_digest(source)
            log.info(f"Received {files} files (source {digest[:12]})")
            manifest = load_manifest(source)
            refusal = manifest_refusal(manifest) if manifest is not None else None
            if refusal is not None:
                raise BuildFailed(
                    f"kiln.toml asks for something Ray Serve refuses: {refusal}; fix it "
                    "(kiln manifest:check) and deploy again",
                    code="invalid_manifest",
                )
            if manifest is not None and manifest.name and manifest.name != app:
                log.info(f"kiln.toml names the app {manifest.name}; building it as {app}, as asked")
            plan = plan_build(DirectorySource(source), manifest)
            runtime = plan.runtime
            manifest_json = manifest.model_dump_json() if manifest else None
            log.step(f"Detected a {plan.runtime} app ({plan.entrypoint})")
            deps = plan.dependencies
            log.info(
                f"dependencies: {deps.path if deps else 'none (no requirements.txt or pyproject.toml)'}"
            )
            box = sandbox_for(self.settings, app, self.store.sandbox_id(app))
            job = BuildJob(app, record.id, source, digest, plan, manifest, workdir, box)
            artifact = artifacts.build(job, log)
            if manifest is not None and manifest.addons:
                self._attach_addons(app, [a.value for a in manifest.addons], actor, log)
            if manifest is not None and (manifest.model is not None or manifest.release):
                self._release_phase(app, record.id, manifest, artifact, artifacts, log, box)
            release = self.store.release_build(
                app,
                build_id=record.id,
                artifact=artifact,
                manifest=manifest_json,
                description=f"Deploy build {record.id} ({plan.runtime} {artifact.kind})",
                actor=actor,
            )
            log.step(f"Released v{release.version} in {time.monotonic() - started:.1f}s")
            return self.store.builds.finish(
                record.id, status=BuildStatus.SUCCEEDED, log=log.text(), source_digest=digest,
                runtime=runtime, artifact=artifact, manifest=manifest_json,
            )  # fmt: skip
        except (BuildFailed, ManifestError, KilnError) as exc:
            return self._fail(record.id, log, exc.message, digest, runtime, manifest_json)
        except Exception as exc:  # a bug: fail the build, keep the platform up, keep the trace
            logger.exception("build %s of %s crashed", record.id, app)
            message = f"internal error: {type(exc).__name__}: {exc} (see the control plane's log)"
            return self._fail(record.id, log, message, digest, runtime, manifest_json)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _release_phase(
        self, app: str, build_id: int, manifest: Manifest, artifact: Artifact,
        artifacts: ArtifactBuilder, log: BuildLog, sandbox: Sandbox,
    ) -> None:  # fmt: skip
        """Before the release exists: the model's weights into the model cache, then kiln.toml's
        release command (migrations, warm-up) where the new dynos will run, with the app's config.
        Either failing fails the build, and the running release stays. Lines also go to the app's
        release log (kiln logs --source release)."""
        from kiln.release.weights import prefetch
        from kiln.run.logs import LogRecord, append_records

        def release_line(text: str) -> None:
            append_records(
                self.settings.log_dir,
                app,
                [LogRecord(ts=time.time(), source="release", process="kiln", line=text)],
            )

        def step(text: str) -> None:
            log.step(text)
            release_line(text)

        def info(text: str) -> None:
            log.info(text)
            release_line(text)

        config = self.store.get_config(app)
        try:
            if manifest.model is not None:
                prefetch(manifest.model, self.settings, config.get("HF_TOKEN"), step, info)
            if manifest.release:
                step(f"Release phase: running `{manifest.release}`")
                env = {"PYTHONUNBUFFERED": "1", **manifest.env, **config, "KILN_APP": app,
                       "KILN_BUILD": str(build_id), "KILN_DYNO": "release"}  # fmt: skip
                limit = self.settings.release_timeout_s
                code = artifacts.run_once(artifact, manifest.release, env, info, limit, sandbox)
                if code != 0:
                    ended = (
                        f"was stopped after {limit:g} s" if code is None else f"exited with {code}"
                    )
                    raise BuildFailed(
                        f"the release command `{manifest.release}` {ended} (its output is above)"
                        "; fix it, or remove release from kiln.toml, and deploy again"
                    )
                step("Release phase: the release command succeeded")
        except BuildFailed as exc:
            release_line(f"release phase failed: {exc.message}")
            raise

    def _attach_addons(self, app: str, kinds: list[str], actor: str, log: BuildLog) -> None:
        """The add-ons kiln.toml lists, attached before the release so it carries their vars."""
        from kiln.addons.attach import attach_missing

        for info in attach_missing(self.store, self.settings, app, kinds, actor):
            injected = f": sets {', '.join(info.config_vars)}" if info.config_vars else ""
            log.step(f"Attached the {info.kind} add-on (kiln.toml){injected}")

    def _fail(
        self, build_id: int, log: BuildLog, message: str, digest: str | None, runtime: str | None,
        manifest_json: str | None,
    ) -> BuildInfo:  # fmt: skip
        log.error(f"Build failed: {message}")
        log.error("Nothing was released; the app keeps running its current release.")
        return self.store.builds.finish(
            build_id, status=BuildStatus.FAILED, log=log.text(), source_digest=digest,
            runtime=runtime, manifest=manifest_json, error=message.splitlines()[0].rstrip(":"),
        )  # fmt: skip

    def _scratch(self) -> Path:
        path = self.settings.home / "builds"
        path.mkdir(parents=True, exist_ok=True)
        return path
