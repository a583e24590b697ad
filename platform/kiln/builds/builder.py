"""The build stage, start to finish: upload -> source -> manifest -> plan -> artifact.

    builder = Builder(settings, choose_artifact_builders(settings))
    artifact = builder.build("echo", 7, Path("upload.tar.gz"), BuildLog(print),
                             sandbox=box, facts=BuildFacts())

The stage ends at the artifact; what becomes of it (add-ons, the release phase, the release) is
the release stage's (``kiln.release.releaser``), and ``kiln.deploy`` conducts the two.
"""

from __future__ import annotations

__all__ = ["BuildFacts", "Builder", "choose_artifact_builders"]

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kiln.builds.artifacts import ArtifactBuilder, BuildJob
from kiln.builds.image import ImageBuilder
from kiln.builds.log import BuildLog
from kiln.builds.runtimes import plan_build
from kiln.builds.slug import SlugBuilder
from kiln.builds.source import SourceLimits, extract, tree_digest
from kiln.engine import connect_engine
from kiln.errors import InvalidInput, Unavailable
from kiln.manifest import Manifest, load_manifest
from kiln.models import Artifact, ArtifactKind
from kiln.sandbox import Sandbox
from kiln.settings import ArtifactChoice, Settings
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


@dataclass
class BuildFacts:
    """What a build learnt of the source, as it learnt it (kept when it fails half-way)."""

    source_digest: str | None = None
    runtime: str | None = None
    manifest: Manifest | None = None


class Builder:
    """The build stage: an uploaded archive of an app's source -> an artifact (an image, or a
    slug in the app's sandbox). It records nothing; the deploy (``kiln.deploy``) does."""

    def __init__(
        self, settings: Settings, artifacts: ArtifactBuilder | list[ArtifactBuilder]
    ) -> None:
        self.settings = settings
        self.kinds = artifacts if isinstance(artifacts, list) else [artifacts]

    def artifacts_for(self, kind: ArtifactKind | None) -> ArtifactBuilder:
        for builder in self.kinds:
            if kind is None or builder.kind == kind:
                return builder
        raise InvalidInput(
            f"this platform cannot build {kind} artifacts here (it builds: "
            f"{', '.join(b.kind for b in self.kinds)}); an image needs a container engine",
            code="artifact_unavailable",
        )

    def build(
        self, app: str, build_id: int, archive: Path, log: BuildLog, *, sandbox: Sandbox,
        facts: BuildFacts, kind: ArtifactKind | None = None,
    ) -> Artifact:  # fmt: skip
        """Unpack, check, plan and build ``archive``; raises BuildFailed, ManifestError or
        another KilnError, saying why, and fills ``facts`` as it goes."""
        artifacts = self.artifacts_for(kind)
        log.step(f"Build {build_id} of {app}, as {artifacts.describe()}")
        workdir = Path(tempfile.mkdtemp(prefix=f"build-{build_id}-", dir=self._scratch()))
        try:
            source = workdir / "source"
            source.mkdir()
            files = extract(archive, source, SourceLimits(max_bytes=self.settings.max_source_bytes))
            facts.source_digest = tree_digest(source)
            log.info(f"Received {files} files (source {facts.source_digest[:12]})")
            manifest = facts.manifest = load_manifest(source)
            if manifest is not None and manifest.name and manifest.name != app:
                log.info(f"kiln.toml names the app {manifest.name}; building it as {app}, as asked")
            plan = plan_build(DirectorySource(source), manifest)
            facts.runtime = plan.runtime
            log.step(f"Detected a {plan.runtime} app ({plan.entrypoint})")
            deps = plan.dependencies
            log.info(
                f"dependencies: {deps.path if deps else 'none (no requirements.txt or pyproject.toml)'}"
            )
            job = BuildJob(app, build_id, source, facts.source_digest, plan, manifest, workdir,
                           sandbox)  # fmt: skip
            return artifacts.build(job, log)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _scratch(self) -> Path:
        path = self.settings.home / "builds"
        path.mkdir(parents=True, exist_ok=True)
        return path
