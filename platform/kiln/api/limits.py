"""Bounded request bodies, before anything else looks at a request: 1 MiB for the API, the upload
limit for builds and git pushes. Past the limit the client gets 413 with the limit in the
message, whether it said the size up front (``Content-Length``) or streams more than it may.

    app = BodyLimit(api, default=2**20, uploads=settings.max_upload_bytes)
"""

from __future__ import annotations

__all__ = ["BodyLimit"]

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Where a body is an upload: a build's source archive, and git's packs.
_UPLOADS = re.compile(r"^/apps/[^/]+/builds/?$|^/git/")


class _TooLarge(BaseException):
    """Raised from ``receive`` past the limit. A BaseException, so the app's own error
    handling (which turns an Exception into a 500) lets it through to us."""


class BodyLimit:
    def __init__(self, app: ASGIApp, *, default: int, uploads: int) -> None:
        self.app = app
        self.default = default
        self.uploads = uploads

    def limit_for(self, path: str) -> int:
        return self.uploads if _UPLOADS.match(path) else self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, limit, scope["path"])
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:  # a streamed body past the limit: refused, if we still can
                await _refuse(send, limit, scope["path"])


async def _refuse(send: Send, limit: int, path: str) -> None:
    size = f"{limit / 2**20:g} MiB" if limit >= 2**20 else f"{limit} bytes"
    hint = (
        "keep weights and data out of the source (.kilnignore), or raise KILN_MAX_UPLOAD_BYTES"
        if _UPLOADS.match(path)
        else "API requests are small; send less"
    )
    body = json.dumps({"error": {"code": "body_too_large",
                                 "message": f"the request body is over the limit of {size}; {hint}"}}).encode()  # fmt: skip
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
