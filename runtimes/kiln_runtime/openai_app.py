"""What the OpenAI-compatible model servers (``llm``, ``embeddings``) share: the model loads in the
background while the health path answers 503 ``loading`` (so the dyno listens at once and the
supervisor can tell "still loading" from "dead"), and errors come in OpenAI's shape."""

from __future__ import annotations

__all__ = ["GuardedStream", "LoadedModel", "model_app", "openai_error"]

import asyncio
import importlib
import os
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Send

from kiln_runtime import process_age_s

T = TypeVar("T")


def openai_error(
    status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
    code: str | None = None, retry_after: int | None = None,
) -> JSONResponse:  # fmt: skip
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": code}},
        status_code=status,
        headers={"Retry-After": str(retry_after)} if retry_after is not None else None,
    )


class LoadedModel(Generic[T]):
    """The model, once its background load has finished."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self._value: T | None = None

    def get(self) -> T:
        assert self._value is not None, "the model is not loaded yet"
        return self._value

    async def wait(self) -> T:
        if not self.ready.is_set():
            await asyncio.to_thread(self.ready.wait)
        return self.get()


def model_app(
    title: str, model_ref: str, health: str, load: Callable[[], T], imports: Sequence[str] = ()
) -> tuple[FastAPI, LoadedModel[T]]:
    """A FastAPI app that imports IMPORTS then runs LOAD on a thread at start-up (a failure
    prints why and exits the dyno), answers HEALTH, and turns invalid requests into OpenAI's
    400s. Once loaded it logs where the start's time went, e.g. ``kiln_runtime: bench/tiny ready
    2.41s after the process started: runtime 0.45s, import 1.62s (torch, transformers), weights
    0.34s``."""
    loaded: LoadedModel[T] = LoadedModel()

    def run() -> None:
        began = time.perf_counter()
        try:
            for module in imports:
                importlib.import_module(module)
            imported = time.perf_counter()
            loaded._value = load()
        except BaseException:
            traceback.print_exc()
            print(f"kiln_runtime: could not load {model_ref}; the dyno exits", flush=True)
            os._exit(1)
        done, age = time.perf_counter(), process_age_s()
        split = (
            f"import {imported - began:.2f}s ({', '.join(imports)}), weights {done - imported:.2f}s"
        )
        if age is not None:
            split = f"{age:.2f}s after the process started: runtime {age - (done - began):.2f}s, {split}"
        print(f"kiln_runtime: {model_ref} ready {split}", flush=True)
        loaded.ready.set()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=run, name="kiln-load", daemon=True).start()
        yield

    app = FastAPI(title=title, lifespan=lifespan)
    app.state.model = loaded

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if p != "body")
        return openai_error(400, f"{param}: {first['msg']}", param or None)

    @app.get(health, include_in_schema=False)
    def healthz() -> JSONResponse:
        return JSONResponse(
            {"status": "ready" if loaded.ready.is_set() else "loading"},
            status_code=200 if loaded.ready.is_set() else 503,
        )

    return app, loaded


class GuardedStream(StreamingResponse):
    """A stream whose client stops reading is dropped after ``stall_s`` (its slot in the
    engine freed by ``on_stall``), rather than holding the request forever."""

    def __init__(
        self, content: AsyncIterator[bytes], stall_s: float, on_stall: Callable[[], None],
        media_type: str = "text/event-stream",
    ) -> None:  # fmt: skip
        super().__init__(content, media_type=media_type)
        self.stall_s = stall_s
        self.on_stall = on_stall

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # fmt: skip
        iterator = self.body_iterator
        async for chunk in iterator:
            data = chunk if isinstance(chunk, bytes) else str(chunk).encode()
            message = {"type": "http.response.body", "body": data, "more_body": True}
            try:
                await asyncio.wait_for(send(message), timeout=self.stall_s)
            except TimeoutError:
                self.on_stall()
                await iterator.aclose()  # type: ignore[attr-defined]
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
