"""What every artifact builder is given and must provide (image and slug builders)."""

from __future__ import annotations

__all__ = ["ArtifactBuilder", "BuildJob"]

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kiln.builds.log import BuildLog
from kiln.manifest import Manifest
from kiln.models import Artifact, ArtifactKind
from kiln.sandbox import Sandbox
from kiln_runtime.plan import BuildPlan


@dataclass(frozen=True)
class BuildJob:
    app: str
    build_id: int
    source: Path  # the extracted app, owned by this build
    source_digest: str
    plan: BuildPlan
    manifest: Manifest | None
    workdir: Path  # scratch space, removed after the build
    sandbox: Sandbox | None = None  # where and as whom the app's own code runs (slugs)


class ArtifactBuilder(Protocol):
    kind: ArtifactKind

    def describe(self) -> str: ...
    def build(self, job: BuildJob, log: BuildLog) -> Artifact: ...
