"""A transformers engine that batches concurrent requests instead of serialising them.

Batching is continuous: at every decode step, requests that arrived meanwhile are prefilled together
(left-padded) and join the running batch, and sequences that finished leave it, so nobody waits for
a whole batch to end. Each sequence is sampled with its own temperature, top_p and seed, and
streamed as it goes. (For paged attention and higher throughput on GPUs, use vLLM where it is
installed.)

    engine = TransformersEngine.load("/path/to/model")
    request = engine.submit(prompt_ids, SamplingParams(max_tokens=32), loop)
    async for delta in request.stream(): ...
"""

from __future__ import annotations

__all__ = ["EngineBusy", "GenerationRequest", "SamplingParams", "TransformersEngine"]

import asyncio
import inspect
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kiln_runtime.gpus import torch_device


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
    cancelled: bool = False  # nobody reads on: the engine drops it at its next step

    def cancel(self) -> None:
        """Stop generating for this request (its client went away); safe from any thread."""
        self.cancelled = True

    def emit(self, delta: str | None) -> None:
        """Hand DELTA (None: the end) to the request's event loop, from any thread."""
        _post(self.loop, [(self, delta)])

    async def stream(self) -> Any:
        """Text as it is generated; ends when the request finishes."""
        while (delta := await self.deltas.get()) is not None:
            yield delta

    async def chunks(self) -> Any:
        """Like ``stream()``, but the deltas already waiting come joined as one: when the reader
        is slower than generation, fewer and bigger chunks cross every hop, with the same text."""
        while (delta := await self.deltas.get()) is not None:
            parts = [delta]
            while not self.deltas.empty():
                more = self.deltas.get_nowait()
                if more is None:
                    yield "".join(parts)
                    return
                parts.append(more)
            yield "".join(parts)

    async def result(self) -> str:
        async for _ in self.stream():
            pass
        return self.text


def _post(
    loop: asyncio.AbstractEventLoop, deltas: list[tuple[GenerationRequest, str | None]]
) -> None:
    """Queue DELTAS in their requests from another thread: one wake-up of LOOP for them all."""

    def deliver() -> None:
        for request, delta in deltas:
            request.deltas.put_nowait(delta)

    try:
        loop.call_soon_threadsafe(deliver)
    except RuntimeError:  # the loop has closed: nobody reads on
        for request, _delta in deltas:
            request.cancel()


@dataclass
class _Sequence:
    """One request's decoding state."""

    request: GenerationRequest
    generator: Any
    emitted: int = 0  # characters of text already streamed
    # Incremental detokenisation, as TGI and vLLM do it: ids[prefix:read] is context whose text is
    # known, ids[read:] tokens whose text is not yet; only that window is decoded at each step.
    ids: list[int] = field(init=False)  # the prompt, then the generated tokens
    prefix: int = field(init=False)
    read: int = field(init=False)

    def __post_init__(self) -> None:
        self.ids = list(self.request.prompt_ids)
        self.read = len(self.ids)
        self.prefix = max(0, self.read - 5)  # a few prompt tokens: a first word keeps its space

    def text_so_far(self, tokenizer: Any, final: bool) -> str:
        """The text the tokens since the last call add; empty while they end inside a character
        (unless FINAL: then whatever they decode to)."""
        known = tokenizer.decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        text = tokenizer.decode(self.ids[self.prefix :], skip_special_tokens=True)
        if len(text) <= len(known) or (text.endswith("\ufffd") and not final):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return str(text[len(known) :])


@dataclass
class _Batch:
    """Sequences decoding together: row i of every tensor (and of the cache) is sequences[i]."""

    sequences: list[_Sequence]
    cache: Any
    mask: Any  # [rows, cache length]: 0 marks left padding
    positions: Any  # [rows, 1]: the position of each sequence's last token
    logits: Any  # [rows, vocab]: each sequence's next-token logits
    resizable: bool  # whether sequences can join and leave (see TransformersEngine._resizable)
    padded: bool  # whether the mask has padding: else the model needs neither mask nor positions


class EngineBusy(Exception):
    """The engine's queue is full: the client should come back shortly (503, Retry-After)."""


def _context_length(model: Any, tokenizer: Any) -> int | None:
    """Tokens the model takes in all (prompt and completion), when it says."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 10**7 else None


class TransformersEngine:
    def __init__(
        self, model: Any, tokenizer: Any, max_batch: int = 8, window_s: float = 0.005,
        max_queue: int = 64,
    ) -> None:  # fmt: skip
        import torch

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_batch = max_batch
        self.max_queue = max_queue  # requests waiting for the batch; past that, EngineBusy
        self.window_s = window_s
        self.context_length = _context_length(model, tokenizer)
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
        self._outbox: list[tuple[GenerationRequest, str | None]] = []  # deltas not yet posted
        # For tests and metrics:
        self.batches = 0  # prefills run (each takes the requests waiting at that moment)
        self.largest_batch = 0  # most sequences decoding together
        self.sequence_steps = 0  # rows run through decode steps: a finished sequence costs none
        self.aborted = 0  # requests dropped because nobody reads them any more
        threading.Thread(target=self._run, name="kiln-llm-engine", daemon=True).start()

    @classmethod
    def load(cls, path: str, max_batch: int = 8, max_queue: int = 64) -> TransformersEngine:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        device = torch_device()
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)  # type: ignore[arg-type]
        return cls(model, tokenizer, max_batch=max_batch, max_queue=max_queue)

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, loop: asyncio.AbstractEventLoop
    ) -> GenerationRequest:
        if self._queue.qsize() >= self.max_queue:
            raise EngineBusy(f"{self._queue.qsize()} requests are waiting already")
        request = GenerationRequest(prompt_ids, params, loop)
        if params.max_tokens <= 0:  # nothing to generate
            request.finish_reason = "length"
            request.emit(None)
        else:
            self._queue.put(request)
        return request

    # -- the engine thread ----------------------------------------------------------------------

    def _run(self) -> None:
        batch: _Batch | None = None
        with self._torch.inference_mode():
            while True:
                if batch is None:
                    batch = self._admit(None, self._take(self.max_batch, block=True))
                elif batch.resizable and len(batch.sequences) < self.max_batch:
                    room = self.max_batch - len(batch.sequences)
                    batch = self._admit(batch, self._take(room, block=False))
                if batch is None:
                    continue
                running, batch = batch, None
                try:
                    batch = self._step(running)
                except Exception as exc:  # one bad step fails its batch, never the engine
                    self._fail([s.request for s in running.sequences], exc)

    def _take(self, room: int, block: bool) -> list[GenerationRequest]:
        """Up to ROOM queued requests. When idle (BLOCK), wait for one, then WINDOW_S for others to
        share its prefill; while a batch runs, take only those already waiting, so it never stalls."""
        taken = [self._queue.get()] if block else []
        deadline = time.monotonic() + (self.window_s if block else 0.0)
        while len(taken) < room:
            try:
                taken.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return taken

    def _admit(self, batch: _Batch | None, waiting: list[GenerationRequest]) -> _Batch | None:
        """Prefill the waiting requests and add them to the batch; if that fails, only they fail."""
        for request in waiting:
            if request.cancelled:
                self._abort(request)
        self._flush()
        waiting = [r for r in waiting if not r.cancelled]
        if not waiting:
            return batch
        try:
            group = self._prefill(waiting)
            batch = group if batch is None else self._merge(batch, group)
        except Exception as exc:
            self._fail(waiting, exc)
            return batch
        self.largest_batch = max(self.largest_batch, len(batch.sequences))
        return batch

    def _abort(self, request: GenerationRequest) -> None:
        if request.finish_reason is None:
            request.finish_reason = "abort"
            self.aborted += 1
            self._outbox.append((request, None))

    def _fail(self, requests: list[GenerationRequest], exc: Exception) -> None:
        for request in requests:
            if request.finish_reason is None:
                request.error = f"{type(exc).__name__}: {exc}"
                request.finish_reason = "error"
                self._outbox.append((request, None))
        self._flush()

    def _flush(self) -> None:
        """Post the deltas made since the last flush: one wake-up per event loop, not one per
        delta. (A server's loop that woke for every token took the GIL from this thread as often.)"""
        if not self._outbox:  # most steps between arrivals: nothing to post
            return
        outbox, self._outbox = self._outbox, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[GenerationRequest, str | None]]] = {}
        for request, delta in outbox:
            by_loop.setdefault(request.loop, []).append((request, delta))
        for loop, deltas in by_loop.items():
            _post(loop, deltas)

    def _prefill(self, requests: list[GenerationRequest]) -> _Batch:
        """Run the prompts together, left-padded to the longest, each with positions from 0."""
        torch = self._torch
        self.batches += 1
        width = max(len(r.prompt_ids) for r in requests)
        ids = torch.tensor(
            [[self.pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in requests],
            device=self.device,
        )
        mask = torch.tensor(
            [[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in requests],
            device=self.device,
        )
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache = self._cache_of(out)
        sequences = [_Sequence(r, self._generator(r.params.seed)) for r in requests]
        padded = any(len(r.prompt_ids) < width for r in requests)
        return _Batch(sequences, cache, mask, positions[:, -1:], out.logits[:, -1, :].float(),
                      self._resizable(cache), padded)  # fmt: skip

    def _step(self, batch: _Batch) -> _Batch | None:
        """Sample and stream each sequence's next token, drop the finished sequences, and run one
        decode step for the rest; None once every sequence has finished."""
        torch = self._torch
        for sequence in batch.sequences:
            if sequence.request.cancelled:
                self._abort(sequence.request)
        picks = self._pick_tokens(batch)
        tokens = [self._next_token(s, picks[i]) for i, s in enumerate(batch.sequences)]
        self._flush()  # before the forward pass, so the readers run while it is launched
        live = [i for i, s in enumerate(batch.sequences) if s.request.finish_reason is None]
        if not live:
            return None
        if batch.resizable and len(live) < len(batch.sequences):
            batch = self._select(batch, live)
            tokens = [tokens[i] for i in live]
        ids = torch.tensor([[t] for t in tokens], device=self.device)
        mask = torch.cat([batch.mask, batch.mask.new_ones((len(tokens), 1))], dim=1)
        positions = batch.positions + 1
        # Without padding, the model's own causal mask and positions (from the cache's length)
        # are these, and cost less than a mask it must expand at every layer and step.
        shape = {"attention_mask": mask, "position_ids": positions} if batch.padded else {}
        out = self.model(input_ids=ids, use_cache=True, **shape, **{self._cache_arg: batch.cache})
        self.sequence_steps += len(tokens)
        batch.cache, batch.mask, batch.positions = self._cache_of(out), mask, positions
        batch.logits = out.logits[:, -1, :].float()
        return batch

    def _pick_tokens(self, batch: _Batch) -> list[int]:
        """Every sequence's next token, sampled on the device and copied to the host at once: a
        copy per sequence would make the engine wait for the GPU once per row and step (and, in a
        server, hand the GIL to its event loop each time)."""
        torch = self._torch
        greedy = batch.logits.argmax(-1, keepdim=True)  # [rows, 1]
        if all(s.request.params.temperature <= 0 for s in batch.sequences):
            tokens: list[int] = greedy.view(-1).tolist()
            return tokens
        picks = [
            greedy[i]
            if s.request.finish_reason is not None or s.request.params.temperature <= 0
            else self._sample(batch.logits[i], s.request.params, s.generator)
            for i, s in enumerate(batch.sequences)
        ]
        tokens = torch.cat(picks).tolist()
        return tokens

    def _next_token(self, sequence: _Sequence, token: int) -> int:
        """Stream SEQUENCE's next TOKEN; padding for a sequence that finished but could not leave
        its batch."""
        request = sequence.request
        if request.finish_reason is not None:
            return self.pad
        request.completion_tokens += 1
        self._advance(sequence, token)
        return token

    # -- resizing the batch: only a DynamicCache of plain layers ---------------------------------

    def _cache_of(self, out: Any) -> Any:
        cache = getattr(out, "cache", None)
        return cache if cache is not None else out.past_key_values

    def _resizable(self, cache: Any) -> bool:
        """Whether rows can be added to and removed from CACHE: a DynamicCache whose layers each
        hold whole [batch, heads, sequence, dim] tensors. Other caches (sliding windows, static,
        quantised, offloaded, older transformers) keep their batch until it ends."""
        try:
            from transformers.cache_utils import DynamicCache, DynamicLayer
        except ImportError:
            return False
        return (
            type(cache) is DynamicCache
            and not getattr(cache, "offloading", False)
            and bool(cache.layers)
            and all(type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers)
        )

    def _merge(self, batch: _Batch, group: _Batch) -> _Batch:
        """GROUP's rows after BATCH's. The shorter side is left-padded with masked zeros to the
        other's length, so both keep their positions. BATCH is changed only once all is built."""
        if not (batch.resizable and group.resizable):
            raise RuntimeError("this model's KV cache cannot take sequences mid-batch")
        torch = self._torch
        length = max(batch.mask.shape[1], group.mask.shape[1])

        def widen(x: Any, after: int) -> Any:
            """X left-padded with zeros to LENGTH along the dimension that has AFTER ones after it."""
            return torch.nn.functional.pad(x, (0, 0) * after + (length - x.shape[-1 - after], 0))

        def joined(a: Any, b: Any, after: int = 0) -> Any:
            return torch.cat([widen(a, after), widen(b, after)])

        layers = [
            (joined(mine.keys, theirs.keys, 1), joined(mine.values, theirs.values, 1))
            for mine, theirs in zip(batch.cache.layers, group.cache.layers, strict=True)
        ]
        mask = joined(batch.mask, group.mask)
        positions = torch.cat([batch.positions, group.positions])
        logits = torch.cat([batch.logits, group.logits])
        for layer, (keys, values) in zip(batch.cache.layers, layers, strict=True):
            layer.keys, layer.values = keys, values
        padded = batch.padded or group.padded or batch.mask.shape[1] != group.mask.shape[1]
        return _Batch(batch.sequences + group.sequences, batch.cache, mask, positions, logits,
                      True, padded)  # fmt: skip

    def _select(self, batch: _Batch, rows: list[int]) -> _Batch:
        """Only BATCH's ROWS, without the leading columns that are padding in all of them."""
        index = self._torch.tensor(rows, device=self.device)
        mask = batch.mask[index]
        start = int(mask.any(0).int().argmax())  # the first column some sequence attends to
        for layer in batch.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
        sequences = [batch.sequences[i] for i in rows]
        mask = mask[:, start:]
        return _Batch(sequences, batch.cache, mask, batch.positions[index], batch.logits[index],
                      True, bool((mask == 0).any()))  # fmt: skip

    # -- sampling and streaming -----------------------------------------------------------------

    def _advance(self, sequence: _Sequence, token: int) -> None:
        """Update the request's text; emit what is safe to show; finish on EOS, stop or length."""
        request = sequence.request
        if token in self.eos:
            request.completion_tokens -= 1
            request.finish_reason = "stop"
        else:
            sequence.ids.append(token)
            if request.completion_tokens >= request.params.max_tokens:
                request.finish_reason = "length"
        before = len(request.text)
        text = request.text + sequence.text_so_far(
            self.tokenizer, request.finish_reason is not None
        )
        # A stop string can only be new if it ends in the new text.
        stop_at = min(
            (
                at
                for stop in request.params.stop
                if stop and (at := text.find(stop, max(0, before - len(stop) + 1))) >= 0
            ),
            default=-1,
        )
        if stop_at >= 0:
            text = text[:stop_at]
            request.finish_reason = "stop"
        # Hold back a tail that could still turn into a stop string.
        hold = (
            0
            if request.finish_reason
            else max((len(s) - 1 for s in request.params.stop), default=0)
        )
        safe = len(text) - hold
        if safe > sequence.emitted:
            self._outbox.append((request, text[sequence.emitted : safe]))
            sequence.emitted = safe
        request.text = text
        if request.finish_reason is not None:
            self._outbox.append((request, None))

    def _generator(self, seed: int | None) -> Any:
        generator = self._torch.Generator(device=self.device)
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        return generator

    def _sample(self, logits: Any, params: SamplingParams, generator: Any) -> Any:
        """A [1] tensor on the device: a token drawn from LOGITS at the temperature, within top_p."""
        torch = self._torch
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            ordered, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(ordered, dim=-1) - ordered < params.top_p
            ordered = ordered * keep
            probs = torch.zeros_like(probs).scatter(0, order, ordered)
            probs = probs / probs.sum()
        return torch.multinomial(probs, 1, generator=generator)
