"""A dyno whose release reserved GPUs and that sees none stops at start, saying so (this machine
has none, so every reserved GPU here is one the dyno cannot see)."""

import subprocess
import sys

import pytest

from kiln_runtime.gpus import GpusMissing, check_gpus, reserved_gpus, torch_device


def test_a_dyno_that_reserved_no_gpu_runs_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_GPUS", "0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    check_gpus()
    assert torch_device() == "cpu"
    monkeypatch.delenv("KILN_GPUS")  # outside Kiln
    assert reserved_gpus() == 0 and torch_device() == "cpu"


def test_a_reserved_gpu_that_is_not_visible_is_an_error_not_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KILN_GPUS", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(GpusMissing, match=r"reserved 2 GPU\(s\).*CUDA_VISIBLE_DEVICES='0,1'"):
        torch_device()


def test_the_runtime_server_stops_at_start_with_the_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "app.py").write_text("def app(environ, start_response):\n    return []\n")
    done = subprocess.run(
        [sys.executable, "-m", "kiln_runtime", "python", "app:app"], cwd=tmp_path, timeout=60,
        capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "KILN_GPUS": "1", "CUDA_VISIBLE_DEVICES": "3",
             "PORT": "0"},
    )  # fmt: skip
    assert done.returncode != 0
    assert "kiln: this release reserved 1 GPU(s)" in done.stderr, done.stderr
