"""Detect and plan a Python web app: a dependency file plus a module defining ``app``."""

from __future__ import annotations

__all__ = ["NAME", "detect", "plan"]

from kiln_runtime.plan import (
    AppManifest,
    BuildPlan,
    DetectionError,
    Source,
    dependency_file,
    module_names,
)

NAME = "python"
_MODULES = ("main", "app", "server", "api", "asgi", "wsgi")
_OBJECTS = ("app", "application")
LOOKED_FOR = (
    "requirements.txt or pyproject.toml, and a module main.py, app.py, server.py, api.py, "
    "asgi.py or wsgi.py defining `app`"
)


def _find_app(source: Source) -> str | None:
    """The first candidate module's app object; a syntax error in a candidate is reported."""
    for module in _MODULES:
        names = module_names(source, module)
        for name in _OBJECTS:
            if names is not None and name in names:
                return f"{module}:{name}"
    return None


def detect(source: Source) -> bool:
    """A dependency file and a candidate module: plan() then says what, if anything, is wrong."""
    has_dependencies = source.exists("requirements.txt") or source.exists("pyproject.toml")
    return has_dependencies and any(source.exists(f"{module}.py") for module in _MODULES)


def plan(source: Source, manifest: AppManifest | None) -> BuildPlan:
    entrypoint = (manifest.entrypoint if manifest else None) or _find_app(source)
    if entrypoint is None:
        raise DetectionError(
            f"the python runtime found no app object: it looked for {LOOKED_FOR}. Add one, or "
            'set entrypoint = "module:attribute" in kiln.toml'
        )
    module, _, attribute = entrypoint.partition(":")
    names = module_names(source, module)
    if names is None:
        raise DetectionError(
            f"entrypoint {entrypoint}: the app has no module {module} ({module.replace('.', '/')}.py)"
        )
    if attribute.split(".")[0] not in names:
        raise DetectionError(
            f"{module.replace('.', '/')}.py defines no `{attribute}`: the entrypoint {entrypoint} "
            f"needs a module-level {attribute} (e.g. {attribute} = FastAPI()), or point "
            "entrypoint in kiln.toml at the object that is the app"
        )
    health = manifest.health.path if manifest else "/healthz"
    return BuildPlan(
        runtime=NAME,
        entrypoint=entrypoint,
        dependencies=dependency_file(source, manifest),
        env={"KILN_RUNTIME": NAME, "KILN_ENTRYPOINT": entrypoint, "KILN_HEALTH_PATH": health},
        gpu=bool(manifest and manifest.resources.gpu),
    )
