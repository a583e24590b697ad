"""Which runtime builds an app: the one ``kiln.toml`` names, else the first whose detect() fires."""

from __future__ import annotations

__all__ = ["BUILDPACKS", "plan_build"]

from types import ModuleType

from kiln.builds.log import BuildFailed
from kiln.manifest import Manifest
from kiln_runtime.embeddings import buildpack as embeddings_buildpack
from kiln_runtime.llm import buildpack as llm_buildpack
from kiln_runtime.model import buildpack as model_buildpack
from kiln_runtime.plan import BuildPlan, DetectionError, Source
from kiln_runtime.python import buildpack as python_buildpack

# In detection order: a class with load() and predict() is the narrower signature, so it goes
# first; the python runtime then takes any app with a dependency file and a main module.
BUILDPACKS: dict[str, ModuleType] = {
    "model": model_buildpack,
    "python": python_buildpack,
    "llm": llm_buildpack,  # named in kiln.toml, never detected
    "embeddings": embeddings_buildpack,
}


def plan_build(source: Source, manifest: Manifest | None) -> BuildPlan:
    """The build plan for ``source``, or ``BuildFailed`` saying what was looked for."""
    try:
        if manifest is not None and manifest.runtime is not None:
            buildpack = BUILDPACKS.get(manifest.runtime.value)
            if buildpack is None:
                raise BuildFailed(
                    f"kiln.toml asks for runtime {manifest.runtime.value!r}, which this Kiln does "
                    f"not have yet; available: {', '.join(BUILDPACKS)}",
                    code="runtime_unavailable",
                )
            plan: BuildPlan = buildpack.plan(source, manifest)
            return plan
        for buildpack in BUILDPACKS.values():
            if buildpack.detect(source):
                detected: BuildPlan = buildpack.plan(source, manifest)
                return detected
    except DetectionError as exc:
        raise BuildFailed(str(exc), code="detection_failed") from None
    looked_for = "\n".join(f"  {name}: {bp.LOOKED_FOR}" for name, bp in BUILDPACKS.items())
    raise BuildFailed(
        "could not detect how to build this app. Looked for:\n"
        f"{looked_for}\n"
        'Name the runtime in kiln.toml, e.g. runtime = "python" and entrypoint = "main:app"',
        code="detection_failed",
    )
