"""Streams server-sent events with pauses between them, and tells who answered."""

import asyncio
import os
import time

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

app = FastAPI()


@app.get("/")
def hello() -> dict[str, object]:
    return {"pid": os.getpid(), "release": os.environ.get("KILN_RELEASE"), "greeting": os.environ.get("GREETING")}


@app.get("/slow")
async def slow(seconds: float = 1.0) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@app.get("/events")
async def events(n: int = 5, gap: float = 0.3) -> StreamingResponse:
    async def stream():  # type: ignore[no-untyped-def]
        for i in range(n):
            yield f"data: {{\"i\": {i}, \"t\": {time.time()}}}\n\n"
            await asyncio.sleep(gap)
        yield "data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")
