"""``POST /v1/embeddings`` (OpenAI's shape) over a sentence-transformers model, batched per call."""

from __future__ import annotations

__all__ = ["build_app", "main"]

import asyncio
import base64
import os
import threading
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, Field

from kiln_runtime.dyno import health_path, serve
from kiln_runtime.gpus import torch_device
from kiln_runtime.openai_app import model_app, openai_error
from kiln_runtime.weights import model_path


class EmbeddingRequest(BaseModel):
    input: str | list[str] = Field(description="A text or a list of texts.")
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"


IMPORTS = ("torch", "sentence_transformers")  # most of a start; a spare has them done
MAX_INPUTS = 2048  # as OpenAI's API


def build_app(model_ref: str, health: str = "/healthz") -> FastAPI:
    name = model_ref.split("@", 1)[0]
    lock = threading.Lock()  # one encode at a time: the model batches each call's texts itself

    def load() -> Any:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(model_path(model_ref), device=torch_device())

    app, loaded = model_app(f"embeddings: {name}", model_ref, health, load, imports=IMPORTS)

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> Any:
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts or any(not t for t in texts):
            return openai_error(400, "input must be non-empty text", "input")
        if len(texts) > MAX_INPUTS:
            return openai_error(400, f"at most {MAX_INPUTS} inputs per request, got {len(texts)}",
                                "input")  # fmt: skip
        model = await loaded.wait()

        def encode() -> Any:
            with lock:
                return model.encode(texts, normalize_embeddings=True)

        vectors = await asyncio.to_thread(encode)
        counted = await asyncio.to_thread(model.tokenizer, texts)
        tokens = sum(len(ids) for ids in counted["input_ids"])
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


def main() -> None:
    serve(build_app(os.environ.get("KILN_MODEL", ""), health_path()))
