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
