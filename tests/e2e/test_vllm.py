"""Journey: an llm app on vLLM (its CPU build here), deployed through Kiln from the (fake) hub with
a LoRA adapter, answers the openai client through Kiln's URL: chat, completion, streaming with
usage, the adapter by name, bad requests, a client that hangs up mid-stream; its engine's figures
reach kiln ps and the platform's /metrics."""

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.apps import write_app
from tests.support.platform import Platform, deploy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

MANIFEST = """\
runtime = "llm"
model = "kiln-test/tiny-vllama@main"
[llm]
engine = "vllm"
max_model_len = 8192
adapters = { sql = "kiln-test/tiny-sql-lora@main" }
engine_args = { enforce_eager = true, max_num_seqs = 8, enable_log_requests = true }
[scaling]
min_replicas = 1
max_replicas = 1
"""


def test_a_vllm_app_with_an_adapter_answers_the_openai_client_through_kiln(
    platform: Platform, fresh_app: Callable[[Platform, str], str], tmp_path: Path
) -> None:
    import openai

    app = fresh_app(platform, "vllm-chat")
    source = write_app(tmp_path, app, {"kiln.toml": MANIFEST})
    output = deploy(platform, source, app, "--artifact", "slug")
    assert "fetching kiln-test/tiny-sql-lora@main into the model cache" in output
    assert "-----> v2 is live" in output
    client = openai.OpenAI(
        base_url=f"{platform.app_url(app)}/v1", api_key="public-app", max_retries=0
    )
    assert {m.id for m in client.models.list()} >= {"kiln-test/tiny-vllama", "sql"}
    reply = client.chat.completions.create(
        model="tiny-vllama", messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    assert reply.choices[0].message.content is not None
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    adapted = client.completions.create(model="sql", prompt="select", max_tokens=6)
    assert adapted.model == "sql" and adapted.choices[0].text
    stream = client.chat.completions.create(
        model="kiln-test/tiny-vllama", messages=[{"role": "user", "content": "ray"}],
        max_tokens=12, stream=True, stream_options={"include_usage": True}, temperature=0,
    )  # fmt: skip
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    with pytest.raises(openai.BadRequestError):  # past max_model_len
        client.completions.create(model="sql", prompt="hello", max_tokens=9000)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="hello", max_tokens=5)

    # A client that hangs up mid-stream: the router closes the dyno's connection and the engine
    # aborts the generation (8000 tokens: far from done when the client leaves). A connection
    # taken just as the deploy's HAProxy reload ends can land on the old, draining process,
    # which was once seen to stream on for a client that had left; a second client then tries.
    body = {"model": "sql", "prompt": "hello kiln", "max_tokens": 8000, "stream": True,
            "temperature": 0, "ignore_eos": True}  # fmt: skip

    def told() -> tuple[str, str]:
        dyno = platform.kiln("logs", "-a", app, "--source", "dyno", "-n", "300").output
        router = platform.kiln("logs", "-a", app, "--source", "router", "-n", "20").output
        return dyno, router

    for attempt in range(3):
        with httpx.stream("POST", f"{platform.app_url(app)}/v1/completions", json=body,
                          timeout=30) as response:  # fmt: skip
            assert next(response.iter_lines()).startswith("data: ")
        deadline = time.monotonic() + 10
        while " aborted." not in (seen := told())[0] or "client left" not in seen[1]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        else:
            break
        assert attempt < 2, "the engine never aborted a request whose client left:\n" + (
            "\n".join(seen)
        )
    cancelled = next(line for line in seen[1].splitlines() if "/v1/completions 200 " in line
                     and "(cancelled: the client left)" in line)  # fmt: skip
    assert int(cancelled.split(" chunks=")[1].split()[0]) < 8000, cancelled

    def engine() -> dict[str, object] | None:
        figures = platform.ps(app)["replicas"][0].get("engine")
        settled = figures and figures.get("requests", 0) >= 3 and figures.get("running") == 0
        return figures if settled else None

    figures = platform.wait("the engine's figures in kiln ps", engine, timeout_s=60)
    assert figures["ttft_ms"] is not None and figures["kv_cache_percent"] >= 0
    assert "ENGINE" in platform.kiln("ps", "-a", app).output
    credentials = json.loads((platform.home / "credentials.json").read_text())
    metrics = httpx.get(f"{credentials['api_url']}/metrics",
                        headers={"Authorization": f"Bearer {credentials['token']}"}).text  # fmt: skip
    assert any(line.startswith("vllm:generation_tokens_total{") and f'app="{app}"' in line
               for line in metrics.splitlines())  # fmt: skip
    dyno_log = platform.kiln("logs", "-a", app, "--source", "dyno", "-n", "2000").output
    assert "starting vLLM" in dyno_log and "--lora-modules sql=" in dyno_log


def test_engine_args_vllm_refuses_fail_the_build_in_vllms_words(
    platform: Platform, fresh_app: Callable[[Platform, str], str], tmp_path: Path
) -> None:
    app = fresh_app(platform, "vllm-bad")
    bad = MANIFEST.replace("max_num_seqs = 8", "max_num_seqs = 8, no_such_flag = 3")
    source = write_app(tmp_path, app, {"kiln.toml": bad})
    output = deploy(platform, source, app, "--artifact", "slug", ok=False)
    assert "kiln.toml asks the llm runtime for what it refuses" in output
    assert "vLLM has no engine argument 'no_such_flag'" in output
    assert "Release phase" not in output  # refused before any weights were fetched
