"""HTTP/1.1 from a replica to its dyno: the replica's half of the data path, kept lean.

The forwarder (``kiln.route.proxy``) sends every request through here. aiohttp's client took about
a quarter of a replica's Python time per request (a py-spy profile of the echo app under load:
its request object, payload writer, response and stream reader per call); this client does what a
relay needs and no more: the request's head and body written in one go, the answer parsed by
httptools (llhttp, the parser uvicorn uses), its body handed on as it comes, connections kept
alive and reused.

What it keeps of a full client: a connection is reused only after a whole answer on a connection
both sides keep alive, and only if it has been idle less than ``IDLE_S`` (below the 5 s after
which uvicorn closes one); a reused connection that breaks before any byte of the answer is
retried once on a new one for idempotent methods; reading pauses while ``PAUSE_AT`` bytes of the
answer wait for the client; a read timeout per wait (for the answer's head, then between chunks);
an answer's head over ``MAX_HEAD`` bytes, or one that is not HTTP, ends the connection.
"""

from __future__ import annotations

__all__ = ["IDEMPOTENT", "Broken", "NotDelivered", "Reply", "Silent", "Upstream", "UpstreamError"]

import asyncio
import collections
from collections.abc import AsyncIterator
from types import TracebackType
from urllib.parse import urlsplit

import httptools

IDLE_S = 4.0  # a kept connection unused this long is closed, before the dyno's server closes it
CONNECT_S = 10.0
PAUSE_AT = 256 * 1024  # bytes of an answer waiting for the client at which reading pauses
MAX_HEAD = 64 * 1024  # bytes of an answer's status line and headers
# Methods a request may be sent with again when it may have reached the dyno already.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})
_WITH_BODY = frozenset({b"POST", b"PUT", b"PATCH"})  # a length is sent even when it is 0


class UpstreamError(ConnectionError):
    """The dyno could not be reached, or its connection ended before its answer was whole."""


class NotDelivered(UpstreamError):
    """No connection to the dyno: the request never reached it."""


class Broken(UpstreamError):
    """The connection ended (or the dyno's answer was not HTTP) before the answer was whole."""


class Silent(TimeoutError):
    """The dyno sent nothing for the read timeout: no answer's head, or no next chunk."""


class _Connection(asyncio.Protocol):
    """One connection to the dyno, parsing one answer at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._writable: asyncio.Future[None] | None = None  # set while the kernel's buffer is full
        self.sending: asyncio.Future[None] | None = None  # a body of unknown length, still going
        self.idle_timer: asyncio.TimerHandle | None = None  # closes it when kept too long
        self._begin(head_only=False)

    def _begin(self, head_only: bool) -> None:
        """Ready for the next answer (a kept connection is never paused: see reusable())."""
        self.parser = httptools.HttpResponseParser(self)
        self.head_only = head_only
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.has_head = False
        self.complete = False
        self.keep_alive = False
        self.until_close = False  # no length and not chunked: the body ends with the connection
        self.received = False  # any byte of this answer
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None

    # -- asyncio's side ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.complete:  # bytes after the whole answer (or while kept): nobody's answer
            self._fail(Broken("the dyno sent bytes after its answer"))
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Broken("the dyno switched protocols (not forwarded)"))
        except httptools.HttpParserError as exc:  # or a callback's below (its error is set)
            self._fail(self.error or Broken(f"the dyno's answer is not valid HTTP/1.1 ({exc})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(Broken("the dyno closed the connection"))
            self._writable.exception()  # retrieved here: a body sent whole waits on nothing
        if self.has_head and self.until_close and not self.complete and exc is None:
            self.complete = True  # that is how such an answer ends
            self._wake()
        elif not self.complete and self.error is None:
            self._fail(Broken("the dyno closed the connection before its answer was whole"))

    def pause_writing(self) -> None:
        self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # -- httptools' callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.has_head:  # a second answer to one request: the connection is not to be trusted
            self.error = Broken("the dyno sent more than one answer")
            raise self.error

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.has_head:  # trailers: not forwarded
            return
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_HEAD:
            self.error = Broken(f"the dyno's answer's headers are over {MAX_HEAD // 1024} KiB")
            raise self.error
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue and the like: the answer is still to come
            self.headers, self.head_bytes = [], 0
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        fields = {name.lower(): value for name, value in self.headers}
        self.until_close = (
            b"content-length" not in fields
            and b"chunked" not in fields.get(b"transfer-encoding", b"").lower()
            and status not in (204, 304)
        )
        self.has_head = True
        if self.head_only:  # the answer to HEAD has no body, whatever its length says
            self.complete, self.keep_alive = True, False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.head_only:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered >= PAUSE_AT and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.has_head:
            self.complete = True
            self._wake()

    # -- the relay's side ----------------------------------------------------------------------

    def _fail(self, error: BaseException) -> None:
        self.error = error
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self, timeout_s: float | None) -> None:
        """Until the parser has more to say, or ``timeout_s`` passed without a byte."""
        waiter = self.waiter = self.loop.create_future()
        expiry = self.loop.call_later(timeout_s, _expire, waiter) if timeout_s is not None else None
        try:
            await waiter
        finally:
            self.waiter = None
            if expiry is not None:
                expiry.cancel()

    def reusable(self) -> bool:
        """Whether the next request may go on this connection: its answer read whole, both
        sides keeping it, nothing pending or waiting on it."""
        transport = self.transport
        return (
            self.complete and self.keep_alive and self.error is None and not self.lost
            and self.sending is None and not self.paused and not self.chunks
            and transport is not None and not transport.is_closing()
        )  # fmt: skip

    async def writable(self) -> None:
        if self._writable is not None:
            await self._writable

    def take(self) -> bytes:
        data = self.chunks.popleft() if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None and not self.lost:
            self.paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        if self.sending is not None:
            self.sending.cancel()
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(Silent())


class Reply:
    """The dyno's answer: ``status``, ``headers`` as sent, and its body through :meth:`chunks`.
    Leaving its ``async with`` puts a connection whose answer was read whole back for the next
    request, and closes any other (which is how the dyno hears that a client left)."""

    def __init__(self, pool: Upstream, connection: _Connection, timeout_s: float | None) -> None:
        self._pool = pool
        self._connection = connection
        self._timeout_s = timeout_s
        self.status = connection.status
        self.headers = connection.headers

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower case)."""
        return next((v for k, v in self.headers if k.lower() == name), None)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: what waits is handed on in one piece."""
        connection = self._connection
        while True:
            if connection.chunks:
                yield connection.take()
            elif connection.complete:
                return
            elif connection.error is not None:
                raise connection.error
            else:
                await connection.wait(self._timeout_s)

    async def __aenter__(self) -> Reply:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        connection = self._connection
        if kind is None and connection.reusable():
            self._pool.keep(connection)
        else:
            connection.close()


class Upstream:
    """Connections to one dyno: ``url``'s host and port (``http://host:port``), or the unix
    socket ``unix_socket`` (then ``url``'s host is only the Host header)."""

    def __init__(self, url: str, unix_socket: str | None = None) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "localhost", parts.port or 80
        self.host_header = (parts.netloc or self.host).encode("latin-1")
        self.unix_socket = unix_socket
        self._idle: list[_Connection] = []
        self.closed = False

    async def request(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes], timeout_s: float | None = None,
    ) -> Reply:  # fmt: skip
        """Send a request (``target``: its path and query, as sent; ``headers``: without Host,
        Content-Length or Transfer-Encoding, which are set here) and wait for the answer's head.
        Raises :class:`NotDelivered`, :class:`Broken` or :class:`Silent`."""
        framing = (
            b"Transfer-Encoding: chunked\r\n"
            if not isinstance(body, bytes)
            else b"Content-Length: %d\r\n" % len(body)
            if body or method in _WITH_BODY
            else b""
        )
        head = b"".join(
            [method, b" ", target, b" HTTP/1.1\r\nHost: ", self.host_header, b"\r\n",
             *[b"%s: %s\r\n" % pair for pair in headers], framing, b"\r\n"]
        )  # fmt: skip
        connection = self._reuse()
        if connection is not None:
            try:
                return await self._exchange(connection, method, head, body, timeout_s)
            except Broken:
                # It may have been closed by the dyno as it went idle: for a request that may
                # be sent twice, once more on a fresh connection.
                if connection.received or method not in IDEMPOTENT or not isinstance(body, bytes):
                    raise
        return await self._exchange(await self._connect(), method, head, body, timeout_s)

    async def get(self, path: str, limit: int | None = None) -> tuple[int, bytes | None]:
        """``GET path``: its status and whole body (None past ``limit`` bytes). No timeout of
        its own: the caller bounds the whole of it (``asyncio.timeout``)."""
        reply = await self.request(b"GET", path.encode(), [], b"")
        body = bytearray()
        async with reply:
            async for chunk in reply.chunks():
                body += chunk
                if limit is not None and len(body) > limit:
                    return reply.status, None
        return reply.status, bytes(body)

    async def _exchange(
        self, connection: _Connection, method: bytes, head: bytes,
        body: bytes | AsyncIterator[bytes], timeout_s: float | None,
    ) -> Reply:  # fmt: skip
        connection._begin(head_only=method == b"HEAD")
        transport = connection.transport
        assert transport is not None
        try:
            if isinstance(body, bytes):
                transport.write(head + body if len(body) < 65536 else head)
                if len(body) >= 65536:
                    transport.write(body)
            else:
                transport.write(head)
                sending = connection.sending = asyncio.ensure_future(
                    _send_chunked(connection, body)
                )
                sending.add_done_callback(_retrieved)
            while not connection.has_head:
                if connection.error is not None:
                    raise connection.error
                # The read timeout starts once the body is sent: an upload that keeps coming
                # for longer is not the dyno being silent.
                await connection.wait(timeout_s if connection.sending is None else None)
        except BaseException:
            connection.close()
            raise
        return Reply(self, connection, timeout_s)

    def _reuse(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.idle_timer is not None:
                connection.idle_timer.cancel()
            if connection.error is None and not connection.lost:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_S):
                if self.unix_socket is not None:
                    _, connection = await loop.create_unix_connection(
                        lambda: _Connection(loop), self.unix_socket
                    )
                else:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(loop), self.host, self.port
                    )
        except (OSError, TimeoutError) as exc:
            where = self.unix_socket or f"{self.host}:{self.port}"
            raise NotDelivered(f"no connection to the dyno at {where}: {exc}") from exc
        return connection

    def keep(self, connection: _Connection) -> None:
        """A connection whose answer was read whole, for the next request."""
        if self.closed:
            connection.close()
            return
        connection.idle_timer = asyncio.get_running_loop().call_later(
            IDLE_S, self._drop, connection
        )
        self._idle.append(connection)

    def _drop(self, connection: _Connection) -> None:
        """A kept connection unused for IDLE_S: closed before the dyno closes it under a request."""
        if connection in self._idle:
            self._idle.remove(connection)
        connection.close()

    def close(self) -> None:
        """Close the idle connections; those in use close when their answers end."""
        self.closed = True
        while self._idle:
            connection = self._idle.pop()
            if connection.idle_timer is not None:
                connection.idle_timer.cancel()
            connection.close()


def _retrieved(sending: asyncio.Future[None]) -> None:
    """A body's sending ended: its error, if any, is the connection's (it closed), not news."""
    if not sending.cancelled():
        sending.exception()


async def _send_chunked(connection: _Connection, body: AsyncIterator[bytes]) -> None:
    """A body of unknown length, chunk by chunk as the client sends it."""
    transport = connection.transport
    assert transport is not None
    try:
        async for piece in body:
            if piece:
                transport.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await connection.writable()
        transport.write(b"0\r\n\r\n")
    except BaseException:
        transport.close()  # the dyno sees the body cut short, not a shorter body
        raise
    finally:
        connection.sending = None
        connection._wake()  # the wait for the answer's head now runs on the read timeout
