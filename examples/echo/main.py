"""The smallest Kiln app: a FastAPI app that echoes what it is sent."""

import asyncio
import os

from fastapi import FastAPI, Request

app = FastAPI(title="echo")


@app.get("/healthz")
def healthz() -> dict[str, bool]:
    return {"ok": True}


@app.get("/")
def hello() -> dict[str, str]:
    return {"hello": os.environ.get("GREETING", "world")}


@app.post("/echo")
async def echo(request: Request) -> dict[str, object]:
    return {"echo": await request.json()}


@app.get("/slow")
async def slow(seconds: float = 0.5) -> dict[str, float]:
    """Stands in for a model's latency (the autoscaling benchmark uses it)."""
    await asyncio.sleep(min(seconds, 30.0))
    return {"slept": seconds}
