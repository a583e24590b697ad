"""The dyno contract, shared by every runtime: serve on ``$PORT`` (or the unix socket
``$KILN_SOCKET``, where Kiln runs it: only its supervisor can reach that), answer the health path
once ready, stop cleanly on SIGTERM (uvicorn's handlers finish in-flight requests, then exit)."""

from __future__ import annotations

__all__ = ["ASGIApp", "access_log", "health_path", "serve", "with_health"]

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

from kiln_runtime.gpus import GpusMissing, check_gpus

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def access_log() -> bool:
    """Whether uvicorn logs a line per request: only when the app asks (``KILN_ACCESS_LOG=1``)."""
    return os.environ.get("KILN_ACCESS_LOG", "").strip().lower() in {"1", "true", "yes", "on"}


def health_path() -> str:
    return os.environ.get("KILN_HEALTH_PATH", "/healthz")


def with_health(app: ASGIApp, path: str) -> ASGIApp:
    """Answer ``GET path`` with 200 unless the app has its own answer there.

    The app is asked first; only its 404 is replaced. An app that is serving is ready, so an app
    without a health route still meets the contract, and one with its own keeps it.
    """

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != path:
            await app(scope, receive, send)
            return
        replaced = False

        async def intercept(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 404:
                replaced = True
                body = json.dumps({"status": "ok"}).encode()
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
            elif not replaced:
                await send(message)

        await app(scope, receive, intercept)

    return wrapped


def serve(app: ASGIApp) -> None:
    """Run ``app`` until SIGTERM/SIGINT: on the unix socket ``$KILN_SOCKET`` if set, else on
    ``$HOST`` (default all interfaces) and ``$PORT`` (default 8080, as ``docker run`` expects).
    A dyno whose release reserved GPUs and that sees none stops here, saying so."""
    try:
        check_gpus()
    except GpusMissing as exc:
        raise SystemExit(f"kiln: {exc}") from None
    socket = os.environ.get("KILN_SOCKET")
    where: dict[str, Any] = {"uds": socket} if socket else {
        "port": int(os.environ.get("PORT", "8080")),
        "host": os.environ.get("HOST", "0.0.0.0"),  # noqa: S104 - a container listens beyond loopback
    }  # fmt: skip
    uvicorn.run(
        app,
        **where,
        log_level=os.environ.get("KILN_LOG_LEVEL", "info"),
        # The router logs a line for every request (kiln logs --source router); the app's own
        # line per request, the same again, costs the dyno and its replica CPU on every request.
        access_log=access_log(),
        timeout_graceful_shutdown=int(os.environ.get("KILN_GRACEFUL_SHUTDOWN_S", "25")),
        server_header=False,
    )
