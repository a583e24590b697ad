"""The OpenAI API over the engine: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``.

Streaming responses are server-sent events of ``chat.completion.chunk`` objects ending with
``data: [DONE]``; errors have OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``),
so the ``openai`` client raises its own exceptions for them.
"""

from __future__ import annotations

__all__ = ["build_app", "main"]

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from kiln_runtime.dyno import health_path, serve
from kiln_runtime.llm.engine import (
    EngineBusy,
    GenerationRequest,
    SamplingParams,
    TransformersEngine,
)
from kiln_runtime.openai_app import GuardedStream, model_app, openai_error
from kiln_runtime.weights import model_path

IMPORTS = ("torch", "transformers.modeling_utils")  # most of a start; a spare has them done
MAX_STOP = 4  # as OpenAI's API
RETRY_AFTER_S = 2


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=1, description="Only one choice per request.")
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    def params(self) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens or 256,
            temperature=self.temperature, top_p=self.top_p, stop=tuple(stop), seed=self.seed,
        )  # fmt: skip


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = ""

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(
                part.get("text", "") for part in self.content if part.get("type") == "text"
            )
        return self.content or ""


class ChatRequest(_Body):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(_Body):
    prompt: str | list[str]


def build_app(
    model_ref: str, health: str = "/healthz", max_batch: int = 8, max_queue: int = 64,
    stall_s: float = 60.0,
) -> FastAPI:  # fmt: skip
    """The OpenAI API over a TransformersEngine. Bounded: a prompt past the model's context
    (with ``max_tokens``), more than 4 stop strings, a full queue (``max_queue`` waiting: 503
    with Retry-After) are refused in OpenAI's shape; a stream whose client stops reading for
    ``stall_s`` is dropped and frees its place."""
    name = model_ref.split("@", 1)[0]
    app, loaded = model_app(
        f"llm: {name}",
        model_ref,
        health,
        lambda: TransformersEngine.load(
            model_path(model_ref), max_batch=max_batch, max_queue=max_queue
        ),
        imports=IMPORTS,
    )

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "kiln"}],
        }

    async def start(prompt: str, body: _Body) -> GenerationRequest | JSONResponse:
        engine = await loaded.wait()
        params = body.params()
        if len(params.stop) > MAX_STOP:
            return openai_error(400, f"at most {MAX_STOP} stop sequences, got {len(params.stop)}",
                                "stop")  # fmt: skip
        # Tokenising is CPU work: off the event loop, which serves the other requests' streams.
        encoded = await asyncio.to_thread(engine.tokenizer, prompt, add_special_tokens=False)
        ids = list(encoded["input_ids"])
        if not ids:
            return openai_error(400, "the prompt is empty", "prompt")
        limit = engine.context_length
        if limit is not None and len(ids) + params.max_tokens > limit:
            return openai_error(
                400,
                f"the prompt is {len(ids)} tokens and max_tokens {params.max_tokens}: over this "
                f"model's context of {limit} tokens; shorten the prompt or lower max_tokens",
                "messages" if isinstance(body, ChatRequest) else "prompt",
                code="context_length_exceeded",
            )
        try:
            return engine.submit(ids, params, asyncio.get_running_loop())
        except EngineBusy as exc:
            return openai_error(503, f"the model is busy ({exc}); retry shortly", None,
                                kind="server_error", retry_after=RETRY_AFTER_S)  # fmt: skip

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, http: Request) -> Any:
        tokenizer = (await loaded.wait()).tokenizer  # the template comes with the model
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            prompt = await asyncio.to_thread(
                tokenizer.apply_chat_template, messages, add_generation_prompt=True,
                tokenize=False,
            )  # fmt: skip
        else:  # a base model without a chat template: a plain transcript
            prompt = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        request = await start(prompt, body)
        if isinstance(request, JSONResponse):
            return request
        return await _respond(request, body, "chat.completion", name, http, stall_s)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, http: Request) -> Any:
        if isinstance(body.prompt, list):
            if len(body.prompt) != 1:
                return openai_error(400, "send one prompt per request", "prompt")
            body.prompt = body.prompt[0]
        request = await start(body.prompt, body)
        if isinstance(request, JSONResponse):
            return request
        return await _respond(request, body, "text_completion", name, http, stall_s)

    return app


def _usage(request: GenerationRequest) -> dict[str, int]:
    prompt = len(request.prompt_ids)
    return {"prompt_tokens": prompt, "completion_tokens": request.completion_tokens,
            "total_tokens": prompt + request.completion_tokens}  # fmt: skip


def _hung_up(request: GenerationRequest, ident: str) -> None:
    """The client left before REQUEST finished: its sequence leaves the batch at the engine's
    next step, and the dyno's log says so."""
    request.cancel()
    print(f"kiln_runtime: {ident}: the client hung up after {request.completion_tokens} tokens; "
          "generation stopped", flush=True)  # fmt: skip


async def _result_unless_hung_up(request: GenerationRequest, http: Request) -> str | None:
    """REQUEST's text, or None if the client hangs up first. (Its body is read, so the next
    message the server can receive is the disconnect.)"""

    async def disconnect() -> None:
        while (await http.receive())["type"] != "http.disconnect":
            pass

    result, gone = asyncio.ensure_future(request.result()), asyncio.ensure_future(disconnect())
    try:
        await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        finished = result.done()
        if not finished:
            result.cancel()
    return result.result() if finished else None


async def _respond(
    request: GenerationRequest, body: _Body, kind: str, model: str, http: Request,
    stall_s: float = 60.0,
) -> Any:  # fmt: skip
    ident = f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if not body.stream:
        text = await _result_unless_hung_up(request, http)
        if text is None:
            _hung_up(request, ident)
            return Response(status_code=499)  # nginx's "client closed request": nobody reads it
        if request.error:
            return openai_error(500, request.error, kind="server_error")
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": request.finish_reason,
            "logprobs": None,
        }
        if kind == "chat.completion":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return {
            "id": ident,
            "object": kind,
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": _usage(request),
        }

    chunk_kind = "chat.completion.chunk" if kind == "chat.completion" else "text_completion"

    def chunk(delta: str | None, finish: str | None, first: bool = False) -> bytes:
        if kind == "chat.completion":
            content: dict[str, Any] = (
                {"role": "assistant", "content": ""}
                if first
                else ({"content": delta} if delta else {})
            )
            choice = {"index": 0, "delta": content, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        payload = {
            "id": ident,
            "object": chunk_kind,
            "created": created,
            "model": model,
            "choices": [choice],
        }
        return f"data: {json.dumps(payload)}\n\n".encode()

    async def events() -> AsyncIterator[bytes]:
        try:
            async for event in sse():
                yield event
        finally:
            if request.finish_reason is None:  # the client hung up mid-stream
                _hung_up(request, ident)

    async def sse() -> AsyncIterator[bytes]:
        if kind == "chat.completion":
            yield chunk(None, None, first=True)
        async for delta in request.chunks():
            yield chunk(delta, None)
        if request.error:
            yield f"data: {json.dumps({'error': {'message': request.error, 'type': 'server_error'}})}\n\n".encode()
        else:
            yield chunk(None, request.finish_reason)
        if (body.stream_options or {}).get("include_usage"):
            usage = {
                "id": ident,
                "object": chunk_kind,
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(request),
            }
            yield f"data: {json.dumps(usage)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    def stalled() -> None:
        print(f"kiln_runtime: {ident}: the client stopped reading for {stall_s:g}s; the "
              "stream is dropped", flush=True)  # fmt: skip
        request.cancel()

    return GuardedStream(events(), stall_s, stalled)


def main() -> None:
    """vLLM's server where kiln.toml asks for it (or, with engine "auto", where the dyno's
    environment has it); else Kiln's transformers engine."""
    from kiln_runtime.llm import vllm_server

    if vllm_server.chosen():
        vllm_server.main()
        return
    serve(
        build_app(
            os.environ.get("KILN_MODEL", ""),
            health_path(),
            int(os.environ.get("KILN_MAX_BATCH", "8")),
            int(os.environ.get("KILN_MAX_QUEUE", "64")),
            float(os.environ.get("KILN_STREAM_STALL_S", "60")),
        )
    )
