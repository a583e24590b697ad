"""OCI images: the build context and generated Dockerfile, built through the Docker Engine API."""

from __future__ import annotations

__all__ = ["DEFAULT_BASE", "DEFAULT_GPU_BASE", "LOCAL_BASE", "ImageBuilder"]

import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path, PurePosixPath

from uv import find_uv_bin

from kiln.builds.artifacts import BuildJob
from kiln.builds.bundle import EXCLUDES_FILE, REQUIREMENTS_FILE, runtime_bundle, write_excludes
from kiln.builds.dockerfile import DockerfileOptions, render_dockerfile
from kiln.builds.log import BuildFailed, BuildLog
from kiln.builds.registry import registry_access
from kiln.engine import ContainerEngine, EngineError
from kiln.models import Artifact, ArtifactKind
from kiln.settings import Settings

DEFAULT_BASE = "python:3.11-slim"
DEFAULT_GPU_BASE = "nvidia/cuda:12.4.1-runtime-ubuntu22.04"
LOCAL_BASE = "kiln/base:bookworm"  # made by `kiln images:bootstrap` where no registry is reachable

_STEP = re.compile(r"^(Step \d+/\d+ :|STEP \d+/\d+:)\s*(.*)$")


class ImageBuilder:
    kind = ArtifactKind.IMAGE

    def __init__(self, engine: ContainerEngine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings

    def describe(self) -> str:
        return f"image ({self.engine.name} at {getattr(self.engine, 'url', '?')})"

    def build(self, job: BuildJob, log: BuildLog) -> Artifact:
        base = self._base_image(job, log)
        context = self._context(job)
        ca = self.settings.resolved_ca_bundle
        index = self.settings.resolved_index_url
        options = DockerfileOptions(
            base_image=base, uv_image=self._uv_image(log), ca_bundle=ca is not None,
            index_url=bool(index),
        )  # fmt: skip
        (context / "Dockerfile").write_text(render_dockerfile(job.plan, options))
        tag = f"kiln/{job.app}:b{job.build_id}"
        log.step(f"Building image {tag} with {self.engine.name} (base {base})")
        steps = _StepTracker(log)
        try:
            image_id = self.engine.build(
                context, tag, {"KILN_INDEX_URL": index} if index else {}, steps
            )
        except EngineError as exc:
            raise BuildFailed(steps.explain(exc.message, job), code="image_build_failed") from None
        log.step(f"Built {tag} ({image_id.removeprefix('sha256:')[:12]})")
        registry = registry_access(self.settings)
        if registry is not None:  # where the cluster's other nodes pull it from
            remote = registry.remote(tag)
            log.step(f"Pushing {remote}")
            try:
                self.engine.push(tag, remote, registry.auth(), log.info)
            except EngineError as exc:
                raise BuildFailed(
                    f"{exc.message}; other nodes could not pull the image. Check that the "
                    f"registry at {registry.address} runs and that this engine may push there "
                    "(KILN_REGISTRY_USERNAME/PASSWORD; an HTTP registry must be in the engine's "
                    "insecure registries)",
                    code="image_push_failed",
                ) from None
        return Artifact(
            kind=ArtifactKind.IMAGE,
            reference=tag,
            digest=image_id,
            runtime=job.plan.runtime,
            command=list(job.plan.command),
            env=dict(job.plan.env),
        )

    def _context(self, job: BuildJob) -> Path:
        context = job.workdir / "context"
        kiln = context / "kiln"
        (kiln / "deps").mkdir(parents=True)
        shutil.copytree(job.source, context / "app", symlinks=True)
        ca = self.settings.resolved_ca_bundle
        if ca is not None:
            shutil.copyfile(ca, kiln / "ca.crt")
        bundle = runtime_bundle()
        bundle.write_requirements(kiln / "deps" / REQUIREMENTS_FILE, job.plan.extra_requirements)
        write_excludes(kiln / "deps" / EXCLUDES_FILE, job.plan.excluded_requirements)
        if job.plan.dependencies is not None:
            name = PurePosixPath(job.plan.dependencies.path).name
            shutil.copyfile(job.source / job.plan.dependencies.path, kiln / "deps" / name)
        bundle.copy_to(kiln / "runtime")
        return context

    def _uv_image(self, log: BuildLog) -> str:
        """``kiln/uv:<version>``, an image holding only the host's uv binary (made once)."""
        tag = f"kiln/uv:{metadata.version('uv')}"
        if self.engine.has_image(tag):
            return tag
        log.step(f"Making {tag} (uv for image builds; once per uv version)")
        with tempfile.TemporaryDirectory(prefix="kiln-uv-") as scratch:
            context = Path(scratch)
            shutil.copy2(find_uv_bin(), context / "uv")
            (context / "Dockerfile").write_text("FROM scratch\nCOPY uv /uv\n")
            try:
                self.engine.build(context, tag, {}, lambda _line: None)
            except EngineError as exc:
                raise BuildFailed(f"could not make {tag}: {exc.message}") from None
        return tag

    def _base_image(self, job: BuildJob, log: BuildLog) -> str:
        gpu = job.plan.gpu
        chosen = (job.manifest.base_image if job.manifest else None) or (
            self.settings.gpu_base_image if gpu else self.settings.base_image
        )
        if chosen:
            return self._ensure(chosen, log)
        default = DEFAULT_GPU_BASE if gpu else DEFAULT_BASE
        for candidate in (default, LOCAL_BASE):
            if self.engine.has_image(candidate):
                return candidate
        return self._ensure(default, log)

    def _ensure(self, image: str, log: BuildLog) -> str:
        if self.engine.has_image(image):
            return image
        log.step(f"Pulling base image {image}")
        try:
            self.engine.pull(image)
        except EngineError as exc:
            raise BuildFailed(
                f"base image {image} is not on the engine and could not be pulled ({exc.message}).\n"
                f"Without a registry, build a local base with: kiln images:bootstrap (it makes "
                f"{LOCAL_BASE}, which builds then use); or set KILN_BASE_IMAGE, or base_image in "
                "kiln.toml, to an image the engine has",
                code="base_image_missing",
            ) from None
        return image


class _StepTracker:
    """Passes build output to the log, remembering the current Dockerfile step and its output."""

    def __init__(self, log: BuildLog) -> None:
        self.log = log
        self.step = ""
        self.output: list[str] = []

    def __call__(self, line: str) -> None:
        match = _STEP.match(line)
        if match:
            self.step, self.output = match.group(2), []
        else:
            self.output.append(line)
        self.log.info(line)

    def explain(self, engine_message: str, job: BuildJob) -> str:
        detail = "\n".join(line for line in self.output[-10:] if line.strip())
        if "uv pip install" in self.step:
            deps = job.plan.dependencies
            cause = f"could not install the dependencies{f' from {deps.path}' if deps else ''}"
        elif "compileall" in self.step:
            cause = "the app does not compile"
        elif "uv venv" in self.step:
            cause = (
                "could not create the Python environment (does the base image have Python 3.11?)"
            )
        else:
            cause = f"the image build failed at: {self.step or 'the start'}"
        return (
            f"{cause}:\n{detail}\n({engine_message})" if detail else f"{cause} ({engine_message})"
        )
