"""The replica's HTTP/1.1 client to its dyno, against raw servers that answer exactly as told:
the answers a dyno may give (streamed, unframed, to HEAD, after 100 Continue), the ones it should
not (garbage, endless headers, a connection cut mid-body), and connection reuse."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from kiln.route import upstream
from kiln.route.upstream import Broken, NotDelivered, Silent, Upstream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (by Content-Length, or chunked, decoded)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {
        k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    if "content-length" in fields:
        return head, await reader.readexactly(int(fields["content-length"]))
    body = b""
    if fields.get("transfer-encoding") == "chunked":
        while (size := int((await reader.readline()).strip(), 16)) != 0:
            body += await reader.readexactly(size)
            await reader.readline()
        await reader.readline()
    return head, body


class Dyno:
    """A raw server on a unix socket; counts its connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0

    async def serve(self, path: Path) -> asyncio.Server:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        return await asyncio.start_unix_server(on_connect, str(path))


def run(handler: Handler, test: Callable[[Upstream, Dyno], Awaitable[None]], tmp: Path) -> Dyno:
    dyno = Dyno(handler)

    async def main() -> None:
        server = await dyno.serve(tmp / "dyno.sock")
        client = Upstream("http://dyno", str(tmp / "dyno.sock"))
        try:
            await asyncio.wait_for(test(client, dyno), 20)
        finally:
            client.close()
            server.close()

    asyncio.run(main())
    return dyno


async def read_all(client: Upstream, method: bytes = b"GET", body: bytes = b"",
                   timeout_s: float | None = 5.0) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:  # fmt: skip
    reply = await client.request(method, b"/x", [(b"X-Test", b"1")], body, timeout_s)
    async with reply:
        data = b"".join([chunk async for chunk in reply.chunks()])
    return reply.status, data, reply.headers


async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head, body = await read_request(reader)
        answer = head.split(b"\r\n", 1)[0] + b" " + body
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
        await writer.drain()


def test_a_connection_is_kept_and_reused_for_whole_answers(tmp_path: Path) -> None:
    async def test(client: Upstream, dyno: Dyno) -> None:
        for n in range(5):
            status, data, _ = await read_all(client, b"POST", b"body %d" % n)
            assert (status, data) == (200, b"POST /x HTTP/1.1 body %d" % n)

    assert run(keep_answering, test, tmp_path).connections == 1


def test_a_request_on_a_kept_connection_the_dyno_closed_is_sent_again_on_a_new_one(
    tmp_path: Path,
) -> None:
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read(1)  # the next request: closed unanswered, as at a keep-alive timeout

    async def test(client: Upstream, dyno: Dyno) -> None:
        assert (await read_all(client))[:2] == (200, b"ok")
        assert (await read_all(client))[:2] == (200, b"ok")  # GET: sent again
        with pytest.raises(Broken):  # POST: may have been delivered, so not sent twice
            await read_all(client, b"POST", b"x")

    assert run(answer_once, test, tmp_path).connections == 2  # the retry's, then kept


def test_a_chunked_answer_arrives_piece_by_piece_and_a_stream_body_goes_chunked(
    tmp_path: Path,
) -> None:
    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, body = await read_request(reader)
        assert b"Transfer-Encoding: chunked" in head and body == b"onetwo"
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def test(client: Upstream, dyno: Dyno) -> None:
        async def body() -> AsyncIterator[bytes]:
            yield b"one"
            yield b"two"

        reply = await client.request(b"POST", b"/s", [], body(), 5)
        async with reply:
            assert [chunk async for chunk in reply.chunks()] == [b"data: 1\n\n", b"data: 2\n\n"]

    run(stream, test, tmp_path)


def test_answers_without_a_length_head_no_content_and_continue(tmp_path: Path) -> None:
    answers = iter([
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nmade",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",  # to HEAD: a length, no body
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    ])  # fmt: skip

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            answer = next(answers)
            writer.write(answer)
            await writer.drain()
            if b"close" in answer:
                return

    async def test(client: Upstream, dyno: Dyno) -> None:
        assert (await read_all(client, b"POST", b"x"))[:2] == (201, b"made")
        assert (await read_all(client))[:2] == (204, b"")
        status, data, headers = await read_all(client, b"HEAD")
        assert (status, data, headers) == (200, b"", [(b"Content-Length", b"1000")])
        assert (await read_all(client))[:2] == (200, b"until the end")

    run(handler, test, tmp_path)


def test_no_dyno_is_not_delivered(tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(NotDelivered, match="no connection to the dyno"):
            await read_all(Upstream("http://dyno", str(tmp_path / "nobody.sock")))

    asyncio.run(main())


@pytest.mark.parametrize("answer, message", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "before its answer was whole"),
    (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not valid HTTP/1.1"),
    (b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 1000 + b"\r\n", "over 64 KiB"),  # endless
    (b"", "before its answer was whole"),
])  # fmt: skip
def test_a_dyno_that_answers_badly_breaks_only_its_request(
    tmp_path: Path, answer: bytes, message: str
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        if answer.endswith(b"a\r\n"):  # the endless head: its header again and again
            for _ in range(200):
                writer.write(answer[17:])
                await writer.drain()
        await writer.drain()

    async def test(client: Upstream, dyno: Dyno) -> None:
        with pytest.raises(Broken, match=message):
            await read_all(client)

    run(handler, test, tmp_path)


def test_a_silent_dyno_times_out_waiting_for_the_head_and_between_chunks(tmp_path: Path) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        if b"/x" in head:
            await asyncio.sleep(10)  # never answers
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await asyncio.sleep(10)  # never the next chunk

    async def test(client: Upstream, dyno: Dyno) -> None:
        with pytest.raises(Silent):
            await read_all(client, timeout_s=0.2)
        reply = await client.request(b"GET", b"/y", [], b"", 0.2)
        got = []
        with pytest.raises(Silent):
            async with reply:
                async for chunk in reply.chunks():
                    got.append(chunk)
        assert got == [b"abc"]

    run(handler, test, tmp_path)


def test_a_big_answer_pauses_reading_until_taken(tmp_path: Path) -> None:
    size = 4 * 2**20

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        writer.write(b"z" * size)
        await writer.drain()
        await asyncio.sleep(5)

    async def test(client: Upstream, dyno: Dyno) -> None:
        reply = await client.request(b"GET", b"/big", [], b"", 5)
        async with reply:
            await asyncio.sleep(0.3)  # a client that does not read: the dyno's answer waits
            connection = reply._connection
            assert connection.paused and connection.buffered < upstream.PAUSE_AT + 2**20
            total = 0
            async for chunk in reply.chunks():
                total += len(chunk)
        assert total == size

    run(handler, test, tmp_path)


def test_an_answer_left_unread_never_puts_its_connection_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream, "PAUSE_AT", 10)  # the whole answer in one read: paused, and whole

    async def test(client: Upstream, dyno: Dyno) -> None:
        reply = await client.request(b"GET", b"/x", [], b"", 5)
        async with reply:
            await asyncio.sleep(0.1)  # a client gone before it read anything
        assert client._idle == []
        assert (await read_all(client))[0] == 200  # on a new connection, not a paused one

    assert run(keep_answering, test, tmp_path).connections == 2


def test_the_read_timeout_starts_once_a_streamed_body_is_sent(tmp_path: Path) -> None:
    async def test(client: Upstream, dyno: Dyno) -> None:
        async def slow_upload() -> AsyncIterator[bytes]:
            for piece in (b"a", b"b", b"c", b"d"):
                await asyncio.sleep(0.15)  # longer in all than the read timeout, never silent
                yield piece

        reply = await client.request(b"POST", b"/up", [], slow_upload(), 0.3)
        async with reply:
            assert b"".join([chunk async for chunk in reply.chunks()]).endswith(b" abcd")

    run(keep_answering, test, tmp_path)


def test_bytes_after_an_answer_are_nobodys_answer(tmp_path: Path) -> None:
    second = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSECRET"
    made = {"n": 0}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        made["n"] += 1
        if made["n"] < 3:
            await read_request(reader)
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
            if made["n"] == 1:  # a second answer in the same write
                writer.write(answer + second)
            else:  # a late one, while the connection waits for the next request
                writer.write(answer)
                await writer.drain()
                await asyncio.sleep(0.1)
                writer.write(b"STALE!")
            await writer.drain()
        await keep_answering(reader, writer)

    async def test(client: Upstream, dyno: Dyno) -> None:
        reply = await client.request(b"GET", b"/x", [], b"", 5)
        async with reply:
            assert (reply.status, [c async for c in reply.chunks()]) == (200, [b"hi"])
        assert (await read_all(client))[:2] == (200, b"hi")  # a new connection: the late case
        await asyncio.sleep(0.2)
        status, data, _ = await read_all(client)
        assert (status, data) == (200, b"GET /x HTTP/1.1 ")  # its own answer, on a third

    assert run(handler, test, tmp_path).connections == 3


def test_a_reset_is_not_the_end_of_an_unframed_answer() -> None:
    """An answer with no length ends when the dyno closes: with a FIN, not a reset (TCP)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(0.1)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # an RST, not a FIN

    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reply = await Upstream(f"http://127.0.0.1:{port}").request(b"GET", b"/x", [], b"", 5)
        got = []
        with pytest.raises(Broken):
            async with reply:
                async for chunk in reply.chunks():
                    got.append(chunk)
        assert got == [b"partial"]
        server.close()

    asyncio.run(main())


def test_a_kept_connection_closes_after_its_idle_time_and_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream, "IDLE_S", 0.05)

    async def test(client: Upstream, dyno: Dyno) -> None:
        await read_all(client)
        assert len(client._idle) == 1
        await asyncio.sleep(0.2)  # no next request: closed all the same
        assert client._idle == []
        await read_all(client)

    assert run(keep_answering, test, tmp_path).connections == 2
