"""Plan an ``embeddings`` app: a sentence-transformers model named in kiln.toml."""

from __future__ import annotations

__all__ = ["LOOKED_FOR", "NAME", "detect", "plan"]

from pathlib import Path

from kiln_runtime.llm.buildpack import plan_model_runtime
from kiln_runtime.plan import AppManifest, BuildPlan, Source

NAME = "embeddings"
LOOKED_FOR = 'runtime = "embeddings" and model = "org/name" in kiln.toml'


def detect(source: Source) -> bool:
    return False


def plan(source: Source, manifest: AppManifest | None) -> BuildPlan:
    return plan_model_runtime(NAME, source, manifest, Path(__file__).with_name("requirements.txt"))
