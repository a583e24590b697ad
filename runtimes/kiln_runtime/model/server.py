"""Serve a model class: ``load()`` once (in the background, health says 503 until done), then
``POST /predict`` with inputs typed from ``predict``'s signature; generators stream as SSE."""

from __future__ import annotations

__all__ = ["build_app", "main"]

import asyncio
import inspect
import json
import os
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, get_args, get_origin, get_type_hints

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, create_model
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from kiln_runtime.dyno import health_path, serve
from kiln_runtime.python.server import load_object


def _input_model(predict: Any) -> type[BaseModel]:
    hints = get_type_hints(predict)
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(predict).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (hints.get(name, Any), default)
    return create_model("Input", __config__=ConfigDict(extra="forbid"), **fields)


def _output_type(predict: Any) -> Any:
    returned = get_type_hints(predict).get("return", Any)
    if get_origin(returned) is not None and get_origin(returned).__name__ in (
        "Iterator", "Generator", "AsyncIterator", "AsyncGenerator", "Iterable",
    ):  # fmt: skip
        return get_args(returned)[0] if get_args(returned) else Any
    return returned


class _State:
    def __init__(self) -> None:
        self.ready = threading.Event()


def build_app(model_class: type, health: str = "/healthz") -> FastAPI:
    """A FastAPI app serving ``model_class``; ``load()`` starts when the app starts."""
    model = model_class()
    predict = model.predict
    streaming = inspect.isgeneratorfunction(predict) or inspect.isasyncgenfunction(predict)
    Input = _input_model(predict)
    Output = _output_type(predict)
    state = _State()
    concurrency = asyncio.Semaphore(int(getattr(model_class, "max_concurrency", 1)))

    def load() -> None:
        try:
            if hasattr(model, "load"):
                model.load()
        except BaseException:
            traceback.print_exc()
            print(
                f"kiln_runtime: {model_class.__name__}.load() failed; the dyno exits",
                file=sys.stderr,
                flush=True,
            )
            os._exit(1)  # the supervisor records the exit and the log lines above
        state.ready.set()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=load, name="kiln-load", daemon=True).start()
        yield

    app = FastAPI(title=model_class.__name__, lifespan=lifespan)

    @app.get(health, include_in_schema=False)
    def healthz() -> JSONResponse:
        if state.ready.is_set():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "starting"}, status_code=503)

    async def run_predict(inputs: BaseModel) -> Any:
        if not state.ready.is_set():
            await run_in_threadpool(state.ready.wait)
        kwargs = dict(inputs)
        if streaming:
            return _sse(predict, kwargs)
        async with concurrency:
            if inspect.iscoroutinefunction(predict):
                result = await predict(**kwargs)
            else:
                result = await run_in_threadpool(predict, **kwargs)
        return {"output": jsonable_encoder(result)}

    async def endpoint(inputs: BaseModel) -> Any:
        return await run_predict(inputs)

    # The input model is made at run time; FastAPI reads the body's type from the annotation.
    endpoint.__annotations__ = {"inputs": Input, "return": Any}

    @app.exception_handler(Exception)
    async def predict_failed(_request: Any, exc: Exception) -> JSONResponse:
        traceback.print_exception(exc)
        return JSONResponse(
            {"error": {"type": type(exc).__name__, "message": str(exc)}}, status_code=500
        )

    app.post(
        "/predict",
        response_model=None if streaming else dict[str, Output],  # type: ignore[valid-type]
        summary=f"Run {model_class.__name__}.predict",
    )(endpoint)
    return app


def _sse(predict: Any, kwargs: dict[str, Any]) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        try:
            if inspect.isasyncgenfunction(predict):
                async for item in predict(**kwargs):
                    yield _event({"output": jsonable_encoder(item)})
            else:
                iterator: Iterator[Any] = predict(**kwargs)
                async for item in iterate_in_threadpool(iterator):
                    yield _event({"output": jsonable_encoder(item)})
        except Exception as exc:
            yield _event({"error": {"type": type(exc).__name__, "message": str(exc)}})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def main() -> None:
    entrypoint = os.environ.get("KILN_ENTRYPOINT", "model:Model")
    serve(build_app(load_object(entrypoint), health_path()))
