"""What the OpenAI-compatible model servers (``llm``, ``embeddings``) share: the model loads in the
background while the health path answers 503 ``loading`` (so the dyno listens at once and the
supervisor can tell "still loading" from "dead"), and errors come in OpenAI's shape."""

from __future__ import annotations

__all__ = ["LoadedModel", "model_app", "openai_error"]

import asyncio
import os
import threading
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

T = TypeVar("T")


def openai_error(
    status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": None}},
        status_code=status,
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
    title: str, model_ref: str, health: str, load: Callable[[], T]
) -> tuple[FastAPI, LoadedModel[T]]:
    """A FastAPI app that runs LOAD on a thread at start-up (a failure prints why and exits the
    dyno), answers HEALTH, and turns invalid requests into OpenAI's 400s."""
    loaded: LoadedModel[T] = LoadedModel()

    def run() -> None:
        try:
            loaded._value = load()
        except BaseException:
            traceback.print_exc()
            print(f"kiln_runtime: could not load {model_ref}; the dyno exits", flush=True)
            os._exit(1)
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
