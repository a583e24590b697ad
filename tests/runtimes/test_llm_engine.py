"""The llm runtime's engine on a tiny real model: batching, sampling parameters, stopping."""

import asyncio
from pathlib import Path

import pytest

from kiln_runtime.llm.engine import SamplingParams, TransformersEngine


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
