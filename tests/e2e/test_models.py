"""Journey: model apps from the (fake) hub: an LLM and embeddings answer the openai client; a model the hub lacks fails its release."""

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.apps import EXAMPLES, write_app
from tests.support.platform import Platform, deploy

pytestmark = pytest.mark.integration


def test_an_llm_app_from_the_hub_answers_the_openai_client(
    platform: Platform, fresh_app: Callable[[Platform, str], str], tmp_path: Path
) -> None:
    import json

    import openai

    app = fresh_app(platform, "tiny-llm")
    source = write_app(tmp_path, "tiny-llm", {"kiln.toml": (
        'runtime = "llm"\nmodel = "kiln-test/tiny-llama@main"\n[scaling]\nmin_replicas = 1\nmax_replicas = 1\n'
    )})  # fmt: skip
    output = deploy(platform, source, app, "--artifact", "slug")
    assert "-----> Release phase: fetching kiln-test/tiny-llama@main into the model cache" in output
    assert "-----> v2 is live" in output
    client = openai.OpenAI(
        base_url=f"{platform.app_url(app)}/v1", api_key="public-app", max_retries=0
    )
    assert [m.id for m in client.models.list()] == ["kiln-test/tiny-llama"]
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    assert reply.choices[0].message.content is not None and reply.usage is not None
    stream = client.completions.create(
        model="tiny", prompt="ray", max_tokens=6, stream=True, temperature=0
    )
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
    # A client that hangs up mid-stream: through HAProxy, Serve and the supervisor, the dyno
    # hears of it and stops generating.
    body = {"prompt": "hello kiln", "max_tokens": 400, "temperature": 0, "stream": True}
    url = f"{platform.app_url(app)}/v1/completions"
    with httpx.stream("POST", url, json=body, timeout=30) as response:
        assert next(response.iter_lines()).startswith("data: ")
    platform.wait(
        "the dyno to stop generating for the client that left",
        lambda: "the client hung up after" in platform.kiln("logs", "-a", app, "-n", "200").output,
        timeout_s=20,
    )
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[])
    models = json.loads(platform.kiln("models", "--json").output)
    assert any(m["repo_id"] == "kiln-test/tiny-llama" and app in m["used_by"] for m in models)
    release_log = platform.kiln("logs", "-a", app, "--source", "release", "-n", "500").output
    assert "Release phase: fetching kiln-test/tiny-llama@main" in release_log


def test_an_llm_app_with_a_warm_spare_comes_back_from_zero_with_torch_imported(
    platform: Platform, fresh_app: Callable[[Platform, str], str], tmp_path: Path
) -> None:
    app = fresh_app(platform, "spare-llm")
    source = write_app(tmp_path, "spare-llm", {"kiln.toml": (
        'runtime = "llm"\nmodel = "kiln-test/tiny-llama@main"\n[scaling]\nmin_replicas = 0\n'
        "max_replicas = 1\nupscale_delay_s = 0\ndownscale_delay_s = 1\n"
        "downscale_to_zero_delay_s = 1\nwarm_spare = true\n"
    )})  # fmt: skip
    # The release's first replica (the deploy waits for it) imports torch and leaves a spare.
    assert "-----> v2 is live" in deploy(platform, source, app, "--artifact", "slug")
    platform.wait("zero replicas", lambda: not platform.ps(app)["replicas"], timeout_s=90)
    url = f"{platform.app_url(app)}/v1/completions"
    reply = httpx.post(url, json={"prompt": "hi", "max_tokens": 2}, timeout=120)
    assert reply.status_code == 200, reply.text
    platform.wait(
        "the replica's lines",
        lambda: "the dyno is a warm spare" in platform.kiln("logs", "-a", app, "-n", "300").output,
        timeout_s=20,
    )
    log = platform.kiln("logs", "-a", app, "-n", "300").output
    assert "left a warm spare on this node for the next replica" in log
    # Each dyno's own account of its start: the first imported, the spare had nothing left to.
    ready = [line for line in log.splitlines() if " ready " in line and "after the process" in line]
    assert len(ready) >= 2, log
    assert " import 0.00s " not in ready[0] and " import 0.00s " in ready[1], ready


def test_a_model_the_hub_lacks_fails_the_release_and_the_app_keeps_serving(
    platform: Platform, fresh_app: Callable[[Platform, str], str], tmp_path: Path
) -> None:
    app = fresh_app(platform, "no-model")
    deploy(platform, EXAMPLES / "echo", app, "--artifact", "slug")
    source = write_app(
        tmp_path, "no-model", {"kiln.toml": 'runtime = "llm"\nmodel = "kiln-test/not-on-the-hub"\n'}
    )
    output = deploy(platform, source, app, "--artifact", "slug", ok=False)
    assert "the model kiln-test/not-on-the-hub was not found on the hub" in output
    assert httpx.get(f"{platform.app_url(app)}/").json() == {"hello": "world"}


def test_an_embeddings_app_answers_the_openai_client(
    platform: Platform, fresh_app: Callable[[Platform, str], str], tmp_path: Path
) -> None:
    import openai

    app = fresh_app(platform, "embed")
    source = write_app(tmp_path, "embed", {"kiln.toml": (
        'runtime = "embeddings"\nmodel = "sentence-transformers/all-MiniLM-L6-v2"\n'
    )})  # fmt: skip
    deploy(platform, source, app, "--artifact", "slug")
    client = openai.OpenAI(
        base_url=f"{platform.app_url(app)}/v1", api_key="public-app", max_retries=0
    )
    result = client.embeddings.create(model="minilm", input=["hello", "world"])
    assert [len(d.embedding) for d in result.data] == [384, 384]
