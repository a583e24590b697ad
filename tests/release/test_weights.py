"""The release phase fetches weights through the real huggingface-hub client, from a fake hub."""

from pathlib import Path

import pytest

from kiln.bench.hub import FakeHub
from kiln.builds.log import BuildFailed
from kiln.manifest import ModelRef
from kiln.release.weights import model_cache, prefetch
from kiln.settings import Settings


@pytest.fixture
def hub_env(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    return fake_hub


def test_a_model_lands_in_the_cache_in_hugging_face_layout(
    hub_env: FakeHub, settings: Settings
) -> None:
    lines: list[str] = []
    path = prefetch(
        ModelRef.parse("kiln-test/tiny-llama@main"), settings, None, lines.append, lines.append
    )
    assert Path(path).is_relative_to(
        model_cache(settings) / "models--kiln-test--tiny-llama" / "snapshots"
    )
    assert (Path(path) / "model.safetensors").exists() and (Path(path) / "tokenizer.json").exists()
    assert lines[0] == "Release phase: fetching kiln-test/tiny-llama@main into the model cache"
    assert any(line.startswith("Downloading bytes: 100%") for line in lines)
    downloads = len(hub_env.downloads)
    prefetch(ModelRef.parse("kiln-test/tiny-llama"), settings, None, lines.append, lines.append)
    assert len(hub_env.downloads) == downloads  # cached: nothing fetched twice


def test_dynos_load_it_offline(
    hub_env: FakeHub, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = prefetch(ModelRef.parse("kiln-test/tiny-llama"), settings, None, print, print)
    monkeypatch.setenv("HF_HUB_CACHE", str(model_cache(settings)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing answers there
    from kiln_runtime.weights import model_path

    assert model_path("kiln-test/tiny-llama") == path


@pytest.mark.parametrize(
    ("model", "reason"),
    [("kiln-test/no-such-model", "the model kiln-test/no-such-model was not found on the hub"),
     ("kiln-test/tiny-llama@v9", "has no revision 'v9' on the hub: 404 Client Error. Revision Not Found")],
)  # fmt: skip
def test_what_the_hub_lacks_fails_with_its_reason(
    hub_env: FakeHub, settings: Settings, model: str, reason: str
) -> None:
    with pytest.raises(BuildFailed) as failed:
        prefetch(ModelRef.parse(model), settings, None, print, print)
    assert reason in failed.value.message
