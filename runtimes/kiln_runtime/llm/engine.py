"""A transformers engine that batches concurrent requests instead of serialising them.

Requests that arrive while a batch runs wait for the next one; each batch is prefilled together
(left-padded) and decoded step by step with one KV cache, each sequence sampled with its own
temperature, top_p and seed, and streamed as it goes. (Continuous batching, where new requests
join a running batch, is vLLM's job: use that engine on GPUs where it is installed.)

    engine = TransformersEngine.load("/path/to/model")
    request = engine.submit(prompt_ids, SamplingParams(max_tokens=32), loop)
    async for delta in request.stream(): ...
"""

from __future__ import annotations

__all__ = ["GenerationRequest", "SamplingParams", "TransformersEngine"]

import asyncio
import inspect
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    deltas: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    completion_tokens: int = 0
    finish_reason: str | None = None
    text: str = ""
    error: str | None = None
    started: float = field(default_factory=time.monotonic)

    def emit(self, delta: str | None) -> None:
        self.loop.call_soon_threadsafe(self.deltas.put_nowait, delta)

    async def stream(self) -> Any:
        """Text as it is generated; ends when the request finishes."""
        while (delta := await self.deltas.get()) is not None:
            yield delta

    async def result(self) -> str:
        async for _ in self.stream():
            pass
        return self.text


class TransformersEngine:
    def __init__(
        self, model: Any, tokenizer: Any, max_batch: int = 8, window_s: float = 0.005
    ) -> None:
        import torch

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_batch = max_batch
        self.window_s = window_s
        self.eos = {
            t
            for t in [
                tokenizer.eos_token_id,
                getattr(model.generation_config, "eos_token_id", None),
            ]
            if isinstance(t, int)
        }
        if isinstance(getattr(model.generation_config, "eos_token_id", None), list):
            self.eos |= set(model.generation_config.eos_token_id)
        self.pad = (
            tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else next(iter(self.eos), 0)
        )
        self._torch = torch
        # transformers 5 names the KV cache argument "cache"; earlier versions "past_key_values".
        forward = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"
        self._queue: queue.Queue[GenerationRequest] = queue.Queue()
        self.batches = 0  # how many batches ran (for tests and metrics)
        self.largest_batch = 0
        threading.Thread(target=self._run, name="kiln-llm-engine", daemon=True).start()

    @classmethod
    def load(cls, path: str, max_batch: int = 8) -> TransformersEngine:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)  # type: ignore[arg-type]
        return cls(model, tokenizer, max_batch=max_batch)

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, loop: asyncio.AbstractEventLoop
    ) -> GenerationRequest:
        request = GenerationRequest(prompt_ids, params, loop)
        self._queue.put(request)
        return request

    # -- the engine thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.window_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                self._generate(batch)
            except Exception as exc:  # one bad batch must not stop the engine
                for request in batch:
                    if request.finish_reason is None:
                        request.error = f"{type(exc).__name__}: {exc}"
                        request.finish_reason = "error"
                        request.emit(None)

    def _generate(self, batch: list[GenerationRequest]) -> None:
        torch = self._torch
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        width = max(len(r.prompt_ids) for r in batch)
        ids = torch.tensor(
            [[self.pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in batch],
            device=self.device,
        )
        mask = torch.tensor(
            [[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in batch],
            device=self.device,
        )
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generators = [self._generator(r.params.seed) for r in batch]
        generated: list[list[int]] = [[] for _ in batch]
        emitted = [0] * len(batch)
        with torch.inference_mode():
            out = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True
            )
            for _step in range(max(r.params.max_tokens for r in batch)):
                logits = out.logits[:, -1, :].float()
                next_tokens = []
                for i, request in enumerate(batch):
                    if request.finish_reason is not None:
                        next_tokens.append(self.pad)
                        continue
                    token = self._sample(logits[i], request.params, generators[i])
                    generated[i].append(token)
                    request.completion_tokens += 1
                    self._advance(request, generated[i], emitted, i, token)
                    next_tokens.append(token)
                if all(r.finish_reason is not None for r in batch):
                    break
                ids = torch.tensor([[t] for t in next_tokens], device=self.device)
                mask = torch.cat(
                    [mask, torch.ones((len(batch), 1), dtype=mask.dtype, device=self.device)], dim=1
                )
                positions = positions[:, -1:] + 1
                cache = getattr(out, "cache", None) or out.past_key_values
                out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                 use_cache=True, **{self._cache_arg: cache})  # fmt: skip
        for request in batch:
            if request.finish_reason is None:
                request.finish_reason = "length"
                request.emit(None)

    def _advance(
        self, request: GenerationRequest, tokens: list[int], emitted: list[int], i: int, token: int
    ) -> None:
        """Update the request's text; emit what is safe to show; finish on EOS, stop or length."""
        if token in self.eos:
            tokens.pop()
            request.completion_tokens -= 1
            request.finish_reason = "stop"
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        stop_at = min((text.find(s) for s in request.params.stop if s and s in text), default=-1)
        if stop_at >= 0:
            text = text[:stop_at]
            request.finish_reason = "stop"
        elif (
            request.finish_reason is None and request.completion_tokens >= request.params.max_tokens
        ):
            request.finish_reason = "length"
        # Hold back a tail that could still turn into a stop string, and half-decoded bytes.
        hold = (
            0
            if request.finish_reason
            else max((len(s) - 1 for s in request.params.stop), default=0)
        )
        safe = len(text) - hold
        if text.endswith("\ufffd") and request.finish_reason is None:
            safe = min(safe, len(text) - 1)
        if safe > emitted[i]:
            request.emit(text[emitted[i] : safe])
            emitted[i] = safe
        request.text = text
        if request.finish_reason is not None:
            request.emit(None)

    def _generator(self, seed: int | None) -> Any:
        generator = self._torch.Generator(device=self.device)
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        return generator

    def _sample(self, logits: Any, params: SamplingParams, generator: Any) -> int:
        torch = self._torch
        if params.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            ordered, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(ordered, dim=-1) - ordered < params.top_p
            ordered = ordered * keep
            probs = torch.zeros_like(probs).scatter(0, order, ordered)
            probs = probs / probs.sum()
        return int(torch.multinomial(probs, 1, generator=generator))
