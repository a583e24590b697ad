"""The one fixture the llm engine's tests need, for a machine without the platform's stack (the
GPU machine: torch and transformers, no Ray, no SQLAlchemy): run them there with

    python -m pytest tests/runtimes/test_llm_engine.py --noconftest -p tests.gpu_checks.engine_plugin
"""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kiln.bench.tiny_model import build

    return build(tmp_path_factory.mktemp("tiny-llama"))
