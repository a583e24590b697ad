"""Plan an ``llm`` app: a model to serve, named in kiln.toml; no code of the app's own needed."""

from __future__ import annotations

__all__ = ["LOOKED_FOR", "NAME", "detect", "plan", "plan_model_runtime"]

from pathlib import Path

from kiln_runtime.plan import AppManifest, BuildPlan, DetectionError, Source, dependency_file

NAME = "llm"
LOOKED_FOR = 'runtime = "llm" and model = "org/name" in kiln.toml'


def detect(source: Source) -> bool:
    return False  # a model server is asked for by name, never guessed


def plan_model_runtime(
    name: str, source: Source, manifest: AppManifest | None, requirements: Path
) -> BuildPlan:
    model = getattr(manifest, "model", None) if manifest is not None else None
    if model is None:
        raise DetectionError(
            f'the {name} runtime serves a model: set model = "org/name" (with an optional '
            '"@revision") in kiln.toml'
        )
    own = (
        dependency_file(source, manifest)
        if (source.exists("requirements.txt") or source.exists("pyproject.toml"))
        else None
    )
    return BuildPlan(
        runtime=name,
        entrypoint=str(model),
        dependencies=own,
        extra_requirements=() if own else tuple(
            line.strip() for line in requirements.read_text().splitlines() if line.strip() and not line.startswith("#")
        ),
        env={"KILN_RUNTIME": name, "KILN_MODEL": str(model),
             "KILN_HEALTH_PATH": manifest.health.path if manifest else "/healthz"},
        gpu=bool(manifest and manifest.resources.gpu),
    )  # fmt: skip


def plan(source: Source, manifest: AppManifest | None) -> BuildPlan:
    return plan_model_runtime(NAME, source, manifest, Path(__file__).with_name("requirements.txt"))
