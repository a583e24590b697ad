"""The llm runtime's engine on a tiny real model: batching (continuous: sequences join and leave
a running batch), sampling parameters, stopping."""

import asyncio
import time
from pathlib import Path

import pytest

from kiln_runtime.llm.engine import GenerationRequest, SamplingParams, TransformersEngine


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> TransformersEngine:
    return TransformersEngine.load(str(tiny_model), max_batch=8)


def run(
    engine: TransformersEngine, *jobs: tuple[list[int], SamplingParams]
) -> list[tuple[str, str | None, int]]:
    async def main() -> list[tuple[str, str | None, int]]:
        loop = asyncio.get_running_loop()
        requests = [engine.submit(ids, params, loop) for ids, params in jobs]
        texts = await asyncio.gather(*(r.result() for r in requests))
        return [
            (t, r.finish_reason, r.completion_tokens) for t, r in zip(texts, requests, strict=True)
        ]

    return asyncio.run(main())


def prompt(engine: TransformersEngine, text: str) -> list[int]:
    return list(engine.tokenizer(text, add_special_tokens=False)["input_ids"])


def run_joining(
    engine: TransformersEngine,
    first: tuple[list[int], SamplingParams],
    joiner: tuple[list[int], SamplingParams],
) -> tuple[list[str], list[str]]:
    """Submit JOINER once FIRST has streamed some text: (their texts, the timeline of events)."""

    async def watch(name: str, request: GenerationRequest, events: list[str]) -> None:
        async for _delta in request.stream():
            if f"{name} streams" not in events:
                events.append(f"{name} streams")
        events.append(f"{name} ends")

    async def main() -> tuple[list[str], list[str]]:
        loop = asyncio.get_running_loop()
        events: list[str] = []
        early = engine.submit(*first, loop)
        watching = asyncio.create_task(watch("first", early, events))
        while not events:
            await asyncio.sleep(0.001)
        late = engine.submit(*joiner, loop)
        await asyncio.gather(watching, watch("joiner", late, events))
        return [early.text, late.text], events

    return asyncio.run(main())


def test_concurrent_requests_share_a_batch(engine: TransformersEngine) -> None:
    before = engine.batches
    results = run(
        engine,
        *[(prompt(engine, "hello kiln"), SamplingParams(max_tokens=8, seed=i)) for i in range(5)],
    )
    assert engine.batches - before == 1 and engine.largest_batch >= 5
    assert all(reason == "length" and tokens == 8 for _t, reason, tokens in results)


def test_a_prompt_gets_the_same_greedy_answer_alone_or_padded_in_a_batch(
    engine: TransformersEngine,
) -> None:
    short, long = (
        prompt(engine, "hello kiln"),
        prompt(engine, "the quick brown fox jumps over the lazy dog and more"),
    )
    greedy = SamplingParams(max_tokens=12, temperature=0)
    [(alone, _, _)] = run(engine, (short, greedy))
    batched = run(engine, (long, greedy), (short, greedy))
    assert batched[1][0] == alone


def test_seeds_make_sampling_repeatable(engine: TransformersEngine) -> None:
    ids = prompt(engine, "ray serve")
    first = run(engine, (ids, SamplingParams(max_tokens=16, temperature=1.0, seed=42)))
    second = run(engine, (ids, SamplingParams(max_tokens=16, temperature=1.0, seed=42)))
    other = run(engine, (ids, SamplingParams(max_tokens=16, temperature=1.0, seed=7)))
    assert first == second and first != other


def test_a_stop_string_ends_the_text_before_it(engine: TransformersEngine) -> None:
    ids = prompt(engine, "hello")
    [(full, _, _)] = run(engine, (ids, SamplingParams(max_tokens=30, temperature=0)))
    stop = full[3:5]
    [(text, reason, _)] = run(
        engine, (ids, SamplingParams(max_tokens=30, temperature=0, stop=(stop,)))
    )
    assert reason == "stop" and text == full[: full.find(stop)] and stop not in text


def test_a_request_joins_a_running_batch_instead_of_waiting_for_it_to_end(
    engine: TransformersEngine,
) -> None:
    before = engine.batches
    _texts, events = run_joining(
        engine,
        (prompt(engine, "hello kiln"), SamplingParams(max_tokens=300, temperature=0)),
        (prompt(engine, "ray serve"), SamplingParams(max_tokens=4, temperature=0)),
    )
    assert engine.batches - before == 2
    assert events == ["first streams", "joiner streams", "joiner ends", "first ends"]


def test_a_request_gets_the_same_greedy_answer_alone_or_joining_mid_way(
    engine: TransformersEngine,
) -> None:
    # The joiner's prompt is the shorter and it outlives the first: it is left-padded to join,
    # then that padding is dropped with the first sequence.
    first = (
        prompt(engine, "the quick brown fox jumps over the lazy dog"),
        SamplingParams(max_tokens=80, temperature=0),
    )
    joiner = (prompt(engine, "hello kiln"), SamplingParams(max_tokens=100, temperature=0))
    alone = [run(engine, first)[0][0], run(engine, joiner)[0][0]]
    texts, events = run_joining(engine, first, joiner)
    assert texts == alone
    assert events.index("joiner streams") < events.index("first ends") < events.index("joiner ends")


def test_a_finished_sequence_leaves_the_batch_while_the_others_go_on(
    engine: TransformersEngine,
) -> None:
    # The short-lived request has the longer prompt, so the long-lived one was left-padded.
    long_lived = (prompt(engine, "hello kiln"), SamplingParams(max_tokens=40, temperature=0))
    short_lived = (
        prompt(engine, "the quick brown fox jumps over the lazy dog"),
        SamplingParams(max_tokens=3, temperature=0),
    )
    alone = run(engine, long_lived) + run(engine, short_lived)
    before = engine.sequence_steps
    together = run(engine, long_lived, short_lived)
    assert together == alone
    assert [(reason, tokens) for _t, reason, tokens in together] == [("length", 40), ("length", 3)]
    # Each decode step follows a sampled token but the last: 39 + 2, where stepping the
    # finished sequence along until the batch ends would make 39 + 39.
    assert engine.sequence_steps - before == 39 + 2


def test_chunks_join_the_deltas_a_slow_reader_left_waiting() -> None:
    from kiln_runtime.llm.engine import GenerationRequest, SamplingParams

    async def read() -> tuple[list[str], list[str]]:
        loop = asyncio.get_running_loop()
        joined = GenerationRequest([1], SamplingParams(), loop)
        single = GenerationRequest([1], SamplingParams(), loop)
        for request in (joined, single):
            for delta in ("hel", "lo", " kiln", None):
                request.deltas.put_nowait(delta)
        return [c async for c in joined.chunks()], [d async for d in single.stream()]

    chunks, deltas = asyncio.run(read())
    assert chunks == ["hello kiln"] and deltas == ["hel", "lo", " kiln"]


def test_a_reader_whose_event_loop_closed_does_not_fail_the_batch(
    engine: TransformersEngine,
) -> None:
    async def submit_and_leave() -> None:  # a client that went away: its loop closes
        engine.submit(
            prompt(engine, "hello kiln"),
            SamplingParams(max_tokens=200, temperature=0),
            asyncio.get_running_loop(),
        )

    before = engine.aborted
    asyncio.run(submit_and_leave())
    [(_text, reason, tokens)] = run(
        engine, (prompt(engine, "ray serve"), SamplingParams(max_tokens=8, temperature=0))
    )
    assert (reason, tokens) == ("length", 8)
    deadline = time.monotonic() + 10
    while engine.aborted == before:  # the abandoned request leaves at its next step
        assert time.monotonic() < deadline, "the abandoned request was never dropped"
        time.sleep(0.01)


def test_a_cancelled_request_leaves_the_batch(engine: TransformersEngine) -> None:
    async def main() -> GenerationRequest:
        request = engine.submit(
            prompt(engine, "hello kiln"),
            SamplingParams(max_tokens=300, temperature=0),
            asyncio.get_running_loop(),
        )
        async for _delta in request.stream():
            request.cancel()
        return request

    before = engine.aborted
    request = asyncio.run(main())
    assert request.finish_reason == "abort" and request.completion_tokens < 300
    assert engine.aborted == before + 1
