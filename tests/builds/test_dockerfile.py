"""The generated Dockerfile is a pure function of the plan: compared with golden files.

Regenerate after an intended change: UPDATE_GOLDEN=1 scripts/test tests/builds/test_dockerfile.py
"""

import os
from pathlib import Path

import pytest

from kiln.builds.dockerfile import DockerfileOptions, render_dockerfile
from kiln_runtime.plan import BuildPlan, DependencyFile

GOLDEN = Path(__file__).parent / "golden"
PYTHON_PLAN = BuildPlan(
    runtime="python",
    entrypoint="main:app",
    dependencies=DependencyFile(path="requirements.txt", sha256="0" * 64),
    env={"KILN_RUNTIME": "python", "KILN_ENTRYPOINT": "main:app", "KILN_HEALTH_PATH": "/healthz"},
)
MODEL_PLAN = BuildPlan(
    runtime="model",
    entrypoint="model:Model",
    dependencies=None,
    env={"KILN_RUNTIME": "model", "KILN_ENTRYPOINT": "model:Model", "KILN_HEALTH_PATH": "/ready"},
    gpu=True,
)
VLLM_PLAN = BuildPlan(
    runtime="llm",
    entrypoint="org/m",
    dependencies=None,
    env={"KILN_RUNTIME": "llm", "KILN_LLM_ENGINE_ARGS": '{"chat_template": "$KILN_INDEX_URL"}'},
    excluded_requirements=("torchvision",),
    check=("python", "-m", "kiln_runtime.llm.vllm_server", "--check"),
)
CASES = {
    "python_app": (PYTHON_PLAN, DockerfileOptions(base_image="python:3.11-slim")),
    "python_app_behind_proxy": (
        PYTHON_PLAN,
        DockerfileOptions(base_image="kiln/base:bookworm", ca_bundle=True, index_url=True),
    ),
    "model_gpu_no_dependencies": (
        MODEL_PLAN,
        DockerfileOptions(base_image="nvidia/cuda:12.4.1-runtime-ubuntu22.04"),
    ),
    "llm_vllm_checked": (
        VLLM_PLAN,
        DockerfileOptions(base_image="kiln/base:bookworm", index_url=True),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dockerfile_matches_golden(name: str) -> None:
    plan, options = CASES[name]
    rendered = render_dockerfile(plan, options)
    golden = GOLDEN / f"{name}.Dockerfile"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_dependencies_come_before_the_code_so_code_changes_reuse_their_layer() -> None:
    lines = render_dockerfile(PYTHON_PLAN, DockerfileOptions(base_image="b")).splitlines()
    install = next(i for i, line in enumerate(lines) if "uv pip install" in line)
    copy_app = next(i for i, line in enumerate(lines) if line.startswith("COPY") and "app/" in line)
    assert install < copy_app


def test_the_dyno_runs_as_a_non_root_user() -> None:
    dockerfile = render_dockerfile(PYTHON_PLAN, DockerfileOptions(base_image="b"))
    assert "USER 10001:10001" in dockerfile and 'CMD ["python", "-m", "kiln_runtime"]' in dockerfile


def test_a_dollar_in_the_apps_settings_stays_a_dollar_and_the_check_runs_as_the_dyno() -> None:
    """Docker expands $NAME in ENV: unescaped, a build ARG (the index URL, credentials and
    all) would end up in the app's image."""
    text = render_dockerfile(*CASES["llm_vllm_checked"])
    assert '\\"\\$KILN_INDEX_URL\\"' in text and '"$KILN_INDEX_URL' not in text.split("ARG")[-1]
    lines = text.splitlines()
    user = next(i for i, line in enumerate(lines) if line.startswith("USER "))
    check = next(i for i, line in enumerate(lines) if "--check" in line)
    assert user < check  # as the dyno's uid, not root
    assert "--excludes /opt/kiln/deps/excludes.txt" in text
