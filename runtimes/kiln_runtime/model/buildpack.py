"""Detect and plan a model class: a module with a class defining ``load`` and ``predict``."""

from __future__ import annotations

__all__ = ["NAME", "detect", "plan"]

from kiln_runtime.plan import (
    AppManifest,
    BuildPlan,
    DetectionError,
    Source,
    class_methods,
    dependency_file,
    module_names,
)

NAME = "model"
_MODULES = ("model", "predict", "predictor", "main")
LOOKED_FOR = "a module model.py, predict.py, predictor.py or main.py with a class defining load() and predict()"


def _find_model(source: Source) -> str | None:
    for module in _MODULES:
        for name, methods in class_methods(source, module).items():
            if {"load", "predict"} <= methods:
                return f"{module}:{name}"
    return None


def detect(source: Source) -> bool:
    return _find_model(source) is not None


def plan(source: Source, manifest: AppManifest | None) -> BuildPlan:
    entrypoint = (manifest.entrypoint if manifest else None) or _find_model(source)
    if entrypoint is None:
        raise DetectionError(
            f"the model runtime found no model class: it looked for {LOOKED_FOR}. Add one, or set "
            'entrypoint = "module:Class" in kiln.toml'
        )
    module, _, name = entrypoint.partition(":")
    names = module_names(source, module)
    if names is None or name not in names:
        raise DetectionError(
            f"entrypoint {entrypoint}: {module.replace('.', '/')}.py defines no class {name} "
            "with load() and predict()"
        )
    methods = class_methods(source, module).get(name)
    if methods is not None and "predict" not in methods:
        raise DetectionError(
            f"{entrypoint} has no predict() method; the model runtime calls it per request"
        )
    health = manifest.health.path if manifest else "/healthz"
    return BuildPlan(
        runtime=NAME,
        entrypoint=entrypoint,
        dependencies=dependency_file(source, manifest),
        env={"KILN_RUNTIME": NAME, "KILN_ENTRYPOINT": entrypoint, "KILN_HEALTH_PATH": health},
        gpu=bool(manifest and manifest.resources.gpu),
    )
