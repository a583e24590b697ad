"""``POST /v1/embeddings`` (OpenAI's shape) over a sentence-transformers model, batched per call."""

from __future__ import annotations

__all__ = ["build_app", "main"]

import asyncio
import base64
import os
import threading
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from kiln_runtime.dyno import health_path, serve
from kiln_runtime.weights import model_path


class EmbeddingRequest(BaseModel):
    input: str | list[str] = Field(description="A text or a list of texts.")
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"


def build_app(model_ref: str, health: str = "/healthz") -> FastAPI:
    state: dict[str, Any] = {}
    ready = threading.Event()
    name = model_ref.split("@", 1)[0]
    lock = threading.Lock()  # one encode at a time: the model batches each call's texts itself

    def load() -> None:
        try:
            from sentence_transformers import SentenceTransformer

            state["model"] = SentenceTransformer(
                model_path(model_ref), device="cpu" if not _cuda() else "cuda"
            )
        except BaseException:
            traceback.print_exc()
            print(f"kiln_runtime: could not load {model_ref}; the dyno exits", flush=True)
            os._exit(1)
        ready.set()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=load, name="kiln-load", daemon=True).start()
        yield

    app = FastAPI(title=f"embeddings: {name}", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if p != "body")
        return JSONResponse({"error": {"message": f"{param}: {first['msg']}", "type": "invalid_request_error",
                                       "param": param, "code": None}}, status_code=400)  # fmt: skip

    @app.get(health, include_in_schema=False)
    def healthz() -> JSONResponse:
        return JSONResponse(
            {"status": "ready" if ready.is_set() else "loading"},
            status_code=200 if ready.is_set() else 503,
        )

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> Any:
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts or any(not t for t in texts):
            return JSONResponse({"error": {"message": "input must be non-empty text", "type": "invalid_request_error",
                                           "param": "input", "code": None}}, status_code=400)  # fmt: skip
        if not ready.is_set():
            await asyncio.to_thread(ready.wait)
        model = state["model"]

        def encode() -> Any:
            with lock:
                return model.encode(texts, normalize_embeddings=True)

        vectors = await asyncio.to_thread(encode)
        tokens = sum(len(ids) for ids in model.tokenizer(texts)["input_ids"])
        data = []
        for index, vector in enumerate(vectors):
            values: Any = vector.tolist()
            if body.encoding_format == "base64":
                values = base64.b64encode(vector.astype("float32").tobytes()).decode()
            data.append({"object": "embedding", "index": index, "embedding": values})
        return {
            "object": "list",
            "data": data,
            "model": name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return app


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def main() -> None:
    serve(build_app(os.environ.get("KILN_MODEL", ""), health_path()))
