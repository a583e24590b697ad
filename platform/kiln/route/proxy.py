"""The data path inside a replica: an ASGI app that forwards each request to the dyno, streaming.

Bodies and responses pass through as raw bytes (no decompression, no buffering of responses), so
SSE and chunked streams arrive chunk by chunk, Content-Length stays true, and repeated headers
(Set-Cookie) survive. The dyno is called through ``kiln.route.upstream``, a lean HTTP/1.1 client
over kept-alive connections: a general client's cost per request (aiohttp's about 0.4 ms on 2
cores, httpx's 2.3 ms) is the data path's biggest share that Kiln's own code decides.
"""

from __future__ import annotations

__all__ = ["CLIENT_LEFT", "Forwarder"]

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from kiln.route.figures import Answer
from kiln.route.keys import KeyGuard, Verdict, retry_after
from kiln.route.upstream import IDEMPOTENT, NotDelivered, Silent, Upstream, UpstreamError

Scope = MutableMapping[str, Any]
# How a request that ended because its client hung up ends its router line.
CLIENT_LEFT = "cancelled: the client left"
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Hop-by-hop headers belong to one connection, not to the request (RFC 9110 7.6.1).
_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
                  b"te", b"trailer", b"transfer-encoding", b"upgrade", b"host"})  # fmt: skip
# Headers only the platform may set: whatever a client sends under these names is dropped, so an
# app can trust X-Kiln-Key-Id (which key called) and X-Forwarded-* (set here, from the connection).
_PLATFORM_OWNED = frozenset({b"forwarded", b"x-real-ip", b"x-forwarded-for", b"x-forwarded-proto",
                             b"x-forwarded-host", b"x-forwarded-prefix", b"x-forwarded-port"})  # fmt: skip
# Not passed on: the above, and what the request to the dyno sets itself (its body's framing;
# uvicorn here has answered an Expect: 100-continue already).
_NOT_FORWARDED = _HOP | _PLATFORM_OWNED | {b"content-length", b"expect"}
_BUFFER_LIMIT = 8 * 2**20  # bodies with a Content-Length up to this are sent whole


class Forwarder:
    """ASGI app: requests under the app's route go to ``target()`` (the dyno's base URL)."""

    def __init__(
        self,
        target: Callable[[], str],
        ready: Callable[[], Awaitable[bool]],
        on_request: Callable[[str, str, Answer], None] | None = None,
        recover: Callable[[], Awaitable[bool]] | None = None,
        guard: KeyGuard | None = None,
        unix_socket: Callable[[], str | None] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self._target = target
        self._ready = ready
        self._on_request = on_request  # (method, path as sent, answer): the router's line
        self.in_flight = 0
        # Called when the dyno cannot be reached; True once it serves again (restarted in place).
        self._recover = recover or ready
        self._guard = guard
        # Where the dyno listens, when on a unix socket (a restarted dyno makes a new one).
        self._unix_socket = unix_socket or (lambda: None)
        self._upstream: Upstream | None = None
        self._upstream_at: tuple[str | None, str] = (None, "")
        # The app's [http] timeout: for its answer to begin, then between two of its chunks.
        self.timeout_s = timeout_s

    def upstream(self) -> Upstream:
        """The connections to the dyno; new ones when it moved (a restarted dyno makes a new
        socket): requests on the old ones end with them."""
        socket, target = self._unix_socket(), self._target()
        if self._upstream is None or (socket, target) != self._upstream_at:
            if self._upstream is not None:
                self._upstream.close()
            self._upstream, self._upstream_at = Upstream(target, socket), (socket, target)
        return self._upstream

    async def close(self) -> None:
        if self._upstream is not None:
            self._upstream.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets: not forwarded yet
            await send({"type": "websocket.close", "code": 1003})
            return
        loop = asyncio.get_running_loop()
        outcome = _Outcome(loop.time())
        self.in_flight += 1
        try:
            await self._forward(scope, receive, send, outcome)
        except asyncio.CancelledError:
            # Serve cancels a request whose client hung up (or whose request timeout passed):
            # leaving here closes the dyno's connection, which is how the app hears of it.
            outcome.note = CLIENT_LEFT
            outcome.status = outcome.status or 499
            raise
        finally:
            self.in_flight -= 1
            if self._on_request is not None:
                self._on_request(scope["method"], _sent_path(scope), outcome.answer(loop.time()))

    async def _forward(self, scope: Scope, receive: Receive, send: Send, outcome: _Outcome) -> int:
        outcome.status = await self._relay(scope, receive, send, outcome)
        return outcome.status

    async def _relay(self, scope: Scope, receive: Receive, send: Send, outcome: _Outcome) -> int:
        key_id = None
        if self._guard is not None:
            authorization = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            verdict = self._guard.check(authorization.decode("latin-1") or None)
            if verdict.status != 200:
                return await _refuse(send, verdict)
            key_id = verdict.key_id
        if not await outcome.waiting(self._ready()):
            return await _error(send, 503, "the app's dyno is not ready; try again shortly")
        path = _app_path(scope)
        query = scope.get("query_string", b"")
        target = path.encode("latin-1") + (b"?" + query if query else b"")
        headers = [
            (k, v)
            for k, v in scope["headers"]
            # A Kiln key stops here: the app never sees (or logs) it, only which key it was.
            if k not in _NOT_FORWARDED
            and not k.startswith(b"x-kiln-")
            and not (key_id is not None and k == b"authorization")
        ]
        if key_id is not None:
            headers.append((b"X-Kiln-Key-Id", str(key_id).encode()))
        client = scope.get("client")
        if client:
            headers.append((b"X-Forwarded-For", client[0].encode("latin-1")))
        headers.append((b"X-Forwarded-Proto", scope.get("scheme", "http").encode("latin-1")))
        if scope.get("root_path"):
            headers.append((b"X-Forwarded-Prefix", scope["root_path"].encode("latin-1")))
        method = scope["method"].encode("latin-1")
        try:
            body = await _body(scope, receive, outcome)
        except _ClientLeft:
            return await _gone_mid_upload(send)
        retryable = whole = isinstance(body, bytes)
        while True:
            started = False
            try:
                reply = await self.upstream().request(method, target, headers, body, self.timeout_s)
                async with reply:
                    started = True
                    outcome.status = reply.status
                    await send({"type": "http.response.start", "status": reply.status,
                                "headers": [(k, v) for k, v in reply.headers if k.lower() not in _HOP]})  # fmt: skip
                    content_type = reply.header(b"content-type") or b""
                    events = content_type.split(b";", 1)[0].strip().lower() == b"text/event-stream"
                    # Serve's proxy hears that a client left only when no chunk is waiting for
                    # it: a stream that never pauses (an LLM generating) would run to its end for
                    # nobody. So once the body is in, the router listens for the client itself.
                    gone: asyncio.Future[Message] | None = None
                    try:
                        async for chunk in reply.chunks():
                            if outcome.first is None:
                                outcome.first = asyncio.get_running_loop().time()
                            if events:
                                outcome.chunks += chunk.count(b"data:")
                            await send({"type": "http.response.body", "body": chunk, "more_body": True})  # fmt: skip
                            if gone is None:
                                gone = asyncio.ensure_future(receive()) if whole else None
                            elif gone.done() and _left(gone):
                                outcome.note = CLIENT_LEFT
                                break  # out of the reply's block: its connection closes
                    finally:
                        if gone is not None and not gone.done():
                            gone.cancel()
                        elif gone is not None and not gone.cancelled():
                            gone.exception()  # retrieved, so asyncio does not log it as lost
                    await send({"type": "http.response.body", "body": b""})
                    return reply.status
            except Silent:
                if started:  # a stream that stopped sending: cut it
                    outcome.note = f"cut: no chunk for {self.timeout_s:g}s"
                    raise
                outcome.note = f"timed out after {self.timeout_s:g}s"
                return await _error(
                    send, 504,
                    f"the app did not answer within {self.timeout_s:g}s ([http] timeout)",
                    code="app_timeout",
                )  # fmt: skip
            except UpstreamError as exc:
                if started:  # the caller has the status line already: all we can do is stop
                    raise
                if outcome.note == CLIENT_LEFT:  # mid-upload: the body's sending closed it
                    return await _gone_mid_upload(send)
                # The dyno died under us. If the request can be sent again safely (it never
                # reached the dyno, or it is idempotent), wait for the dyno to be restarted in
                # place and send it once more: the caller sees a delay, not a 502.
                never_delivered = isinstance(exc, NotDelivered)
                safe = never_delivered or method in IDEMPOTENT
                if not (retryable and safe and await outcome.waiting(self._recover())):
                    return await _error(
                        send, 502, f"the app's dyno did not answer ({type(exc).__name__})"
                    )
                retryable = False


class _Outcome:
    """One request's outcome, for the router's line: its status, when its first byte went out,
    how long it waited for the dyno, its events, and why it ended early."""

    __slots__ = ("chunks", "first", "held", "note", "started", "status")

    def __init__(self, started: float) -> None:
        self.started = started
        self.status = 0
        self.note = ""
        self.first: float | None = None
        self.held = 0.0
        self.chunks = 0

    async def waiting(self, until: Awaitable[bool]) -> bool:
        """``until``'s answer, its wait counted as held time."""
        loop = asyncio.get_running_loop()
        begun = loop.time()
        try:
            return await until
        finally:
            self.held += loop.time() - begun

    def answer(self, now: float) -> Answer:
        first = None if self.first is None else (self.first - self.started) * 1000
        return Answer(self.status, (now - self.started) * 1000, first_ms=first,
                      held_ms=self.held * 1000, chunks=self.chunks, note=self.note)  # fmt: skip


def _sent_path(scope: Scope) -> str:
    """The path as the client sent it, without its query: still percent-encoded, so it is one
    word in the router's line whatever the client put in it."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    return raw.split(b"?", 1)[0].decode("latin-1")


def _app_path(scope: Scope) -> str:
    """The path as the app sees it: without the route prefix Serve matched."""
    raw: bytes = scope.get("raw_path") or b""
    # As sent (still percent-encoded); a server that gives no raw path: its decoded one, encoded
    # again, so no space or line break of a client's can reach the dyno's request line.
    path = raw.decode("latin-1").split("?", 1)[0] if raw else quote(scope["path"])
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path if path.startswith("/") else "/" + path


class _ClientLeft(ConnectionResetError):
    """The client hung up before its request's body was whole."""


async def _body(scope: Scope, receive: Receive, outcome: _Outcome) -> bytes | AsyncIterator[bytes]:
    """The request body: whole when its length is known (so it can be sent again if the dyno
    restarts), streamed when it is chunked or too large to hold. A client that leaves before
    its body is whole ends the request (:class:`_ClientLeft`): the dyno never gets a shorter
    body as if it were the whole one."""
    headers = dict(scope["headers"])
    length = headers.get(b"content-length")
    chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
    if not chunked and (length is None or int(length) <= _BUFFER_LIMIT):
        parts = []
        while True:
            message = await _part(receive, outcome)
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(parts)

    async def stream() -> AsyncIterator[bytes]:
        while True:
            message = await _part(receive, outcome)  # raising closes the dyno's connection
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body"):
                return

    return stream()


async def _part(receive: Receive, outcome: _Outcome) -> Message:
    """The next part of the request's body; :class:`_ClientLeft` if the client hung up."""
    message = await receive()
    if message["type"] == "http.disconnect":
        outcome.note = CLIENT_LEFT
        raise _ClientLeft
    return message


async def _gone_mid_upload(send: Send) -> int:
    return await _error(send, 499, "the client left before its request was whole",
                        code="client_left")  # fmt: skip


def _left(received: asyncio.Future[Message]) -> bool:
    """Whether what ``receive()`` gave after the whole body says the client is gone."""
    if received.cancelled():
        return False
    if received.exception() is not None:
        return True
    return bool(received.result().get("type") == "http.disconnect")


async def _error(send: Send, status: int, message: str, code: str = "dyno_unavailable") -> int:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
    return status


async def _refuse(send: Send, verdict: Verdict) -> int:
    body = json.dumps({"error": {"code": verdict.code, "message": verdict.message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if verdict.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if verdict.retry_after_s is not None:
        headers.append((b"retry-after", retry_after(verdict.retry_after_s).encode()))
    await send({"type": "http.response.start", "status": verdict.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return verdict.status


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
