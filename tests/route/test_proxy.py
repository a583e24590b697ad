"""The replica's forwarding path, over real HTTP to a real upstream: streams, headers, bodies."""

import asyncio
import gzip
import hashlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from kiln.models import LogRecord
from kiln.route.figures import Answer, parse, router_line
from kiln.route.proxy import CLIENT_LEFT, Forwarder, _app_path
from tests.conftest import free_port

upstream = FastAPI()


@upstream.get("/headers")
def headers(request: Request) -> dict[str, str]:
    return dict(request.headers)


@upstream.get("/cookies")
def cookies() -> Response:
    response = Response("two cookies")
    response.set_cookie("a", "1")
    response.set_cookie("b", "2")
    return response


@upstream.get("/gzipped")
def gzipped() -> Response:
    return Response(
        gzip.compress(b"x" * 1000), headers={"Content-Encoding": "gzip"}, media_type="text/plain"
    )


DIGESTED: list[int] = []  # the sizes of the bodies /digest took whole


@upstream.post("/digest")
async def digest(request: Request) -> dict[str, object]:
    body = await request.body()
    DIGESTED.append(len(body))
    return {"size": len(body), "sha": hashlib.sha256(body).hexdigest()}


@upstream.get("/big")
def big() -> Response:
    return Response(b"y" * (5 * 2**20), media_type="application/octet-stream")


@upstream.get("/events")
async def events() -> StreamingResponse:
    async def stream() -> AsyncIterator[bytes]:
        for i in range(4):
            yield f"data: {i}\n\n".encode()
            await asyncio.sleep(0.3)

    return StreamingResponse(stream(), media_type="text/event-stream")


@upstream.get("/slow")
async def slow() -> dict[str, str]:
    await asyncio.sleep(1.5)
    return {"finally": "yes"}


@upstream.get("/pausing")
async def pausing() -> StreamingResponse:
    async def stream() -> AsyncIterator[bytes]:
        yield b"data: 0\n\n"
        await asyncio.sleep(1.5)
        yield b"data: 1\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


@upstream.get("/trickle")
async def trickle() -> StreamingResponse:
    async def stream() -> AsyncIterator[bytes]:
        for i in range(6):
            yield f"data: {i}\n\n".encode()
            await asyncio.sleep(0.25)

    return StreamingResponse(stream(), media_type="text/event-stream")


endless_streams_ended: list[int] = []


@upstream.get("/endless")
async def endless() -> StreamingResponse:
    async def stream() -> AsyncIterator[bytes]:
        sent = 0
        try:
            while True:
                yield b"data: token\n\n"
                sent += 1
                await asyncio.sleep(0.02)
        finally:  # the client's connection closed: an LLM server aborts the generation here
            endless_streams_ended.append(sent)

    return StreamingResponse(stream(), media_type="text/event-stream")


@upstream.get("/{path:path}")
def anything(path: str, request: Request) -> dict[str, str]:
    return {"path": "/" + path, "query": request.url.query}


def serve_in_thread(app: object, port: int) -> uvicorn.Server:
    # As in a replica (kiln.run.cluster sets FORWARDED_ALLOW_IPS for Ray): no client's
    # X-Forwarded-* is trusted for the connection's own address and scheme.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="error", forwarded_allow_ips=""
    )  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    port = free_port()
    server = serve_in_thread(upstream, port)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True


@pytest.fixture(scope="module")
def proxied(upstream_url: str) -> Iterator[str]:
    proxy_port = free_port()
    servers = []

    async def ready() -> bool:
        return True

    forwarder = Forwarder(lambda: upstream_url, ready)
    servers.append(serve_in_thread(forwarder, proxy_port))
    yield f"http://127.0.0.1:{proxy_port}"
    for server in servers:
        server.should_exit = True


def test_method_path_query_and_headers_pass_through(proxied: str) -> None:
    assert httpx.get(f"{proxied}/a/b?x=1&y=2").json() == {"path": "/a/b", "query": "x=1&y=2"}
    sent = httpx.get(
        f"{proxied}/headers", headers={"Authorization": "Bearer k", "X-Custom": "v"}
    ).json()
    assert sent["authorization"] == "Bearer k" and sent["x-custom"] == "v"
    assert sent["x-forwarded-for"] == "127.0.0.1" and sent["x-forwarded-proto"] == "http"


def test_headers_the_platform_owns_cannot_be_forged_by_the_client(proxied: str) -> None:
    forged = {"X-Kiln-Key-Id": "1", "X-Kiln-App": "other", "X-Forwarded-For": "6.6.6.6",
              "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example",
              "X-Forwarded-Prefix": "/admin", "Forwarded": "for=6.6.6.6", "X-Real-IP": "6.6.6.6"}  # fmt: skip
    sent = httpx.get(f"{proxied}/headers", headers=forged).json()
    assert sent["x-forwarded-for"] == "127.0.0.1" and sent["x-forwarded-proto"] == "http"
    for name in ("x-kiln-key-id", "x-kiln-app", "x-forwarded-host", "x-forwarded-prefix",
                 "forwarded", "x-real-ip"):  # fmt: skip
        assert name not in sent, name


def test_repeated_set_cookie_headers_survive(proxied: str) -> None:
    response = httpx.get(f"{proxied}/cookies")
    assert sorted(response.headers.get_list("set-cookie")) == [
        "a=1; Path=/; SameSite=lax", "b=2; Path=/; SameSite=lax",
    ]  # fmt: skip


def test_compressed_bodies_pass_as_they_are(proxied: str) -> None:
    with httpx.Client() as client, client.stream("GET", f"{proxied}/gzipped") as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert (
        int(response.headers["content-length"]) == len(raw) and gzip.decompress(raw) == b"x" * 1000
    )


def test_big_bodies_both_ways(proxied: str) -> None:
    payload = bytes(range(256)) * (5 * 2**20 // 256)
    assert httpx.post(f"{proxied}/digest", content=payload).json() == {
        "size": len(payload), "sha": hashlib.sha256(payload).hexdigest(),
    }  # fmt: skip
    assert len(httpx.get(f"{proxied}/big").content) == 5 * 2**20


def test_a_chunked_upload_streams_through(proxied: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"z" * 1000

    assert httpx.post(f"{proxied}/digest", content=chunks()).json()["size"] == 10_000


def test_server_sent_events_arrive_chunk_by_chunk(proxied: str) -> None:
    arrivals = []
    with httpx.Client() as client, client.stream("GET", f"{proxied}/events") as response:
        for chunk in response.iter_raw():
            arrivals.append((time.monotonic(), chunk))
    assert b"".join(c for _, c in arrivals) == b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n"
    assert len(arrivals) >= 4 and arrivals[-1][0] - arrivals[0][0] > 0.8  # not buffered


def test_a_dyno_that_is_down_is_a_502_json_error() -> None:
    async def ready() -> bool:
        return True

    port = free_port()
    server = serve_in_thread(Forwarder(lambda: f"http://127.0.0.1:{free_port()}", ready), port)
    response = httpx.get(f"http://127.0.0.1:{port}/")
    server.should_exit = True
    assert response.status_code == 502 and response.json()["error"]["code"] == "dyno_unavailable"


def test_a_dyno_that_never_gets_ready_is_a_503() -> None:
    async def never() -> bool:
        return False

    port = free_port()
    server = serve_in_thread(Forwarder(lambda: "http://127.0.0.1:1", never), port)
    response = httpx.get(f"http://127.0.0.1:{port}/")
    server.should_exit = True
    assert response.status_code == 503


@pytest.mark.parametrize(
    ("root", "raw", "path"),
    [
        ("/echo", b"/echo/", "/"),
        ("/echo", b"/echo", "/"),
        ("/echo", b"/echo/a%20b/c", "/a%20b/c"),
        ("", b"/x", "/x"),
    ],
)
def test_the_route_prefix_is_removed(root: str, raw: bytes, path: str) -> None:
    assert _app_path({"root_path": root, "raw_path": raw, "path": raw.decode()}) == path


def test_a_path_with_no_raw_form_is_encoded_again_for_the_dyno() -> None:
    scope = {"root_path": "/echo", "path": "/echo/a b\r\nX-Evil: 1/é"}
    assert _app_path(scope) == "/a%20b%0D%0AX-Evil%3A%201/%C3%A9"


def test_a_request_the_dyno_never_got_waits_for_the_restart_and_goes_through(proxied: str) -> None:
    up_port = int(proxied.rsplit(":", 1)[1])  # anything that answers will do: the proxy itself
    target = {"url": f"http://127.0.0.1:{free_port()}"}  # a dead dyno first
    recovered = []

    async def ready() -> bool:
        return True

    async def recover() -> bool:
        recovered.append(True)
        target["url"] = f"http://127.0.0.1:{up_port}"  # restarted in place, on a new port
        return True

    port = free_port()
    server = serve_in_thread(Forwarder(lambda: target["url"], ready, None, recover), port)
    response = httpx.get(f"http://127.0.0.1:{port}/a/b?x=1")
    posted = httpx.post(f"http://127.0.0.1:{port}/digest", content=b"abc")
    server.should_exit = True
    assert response.status_code == 200 and response.json() == {"path": "/a/b", "query": "x=1"}
    assert posted.json()["size"] == 3  # never delivered, so safe to send again even for POST
    assert recovered == [True]


def test_with_api_keys_the_key_is_checked_and_never_forwarded(upstream_url: str) -> None:
    from kiln import tokens
    from kiln.models import KeyRule
    from kiln.route.keys import KeyGuard

    key = tokens.mint(tokens.API_KEY)
    guard = KeyGuard()
    guard.update(
        {
            "public": False,
            "keys": [KeyRule(id=3, digest=tokens.digest(key), rate_per_s=1).model_dump()],
        }
    )

    async def ready() -> bool:
        return True

    port = free_port()
    server = serve_in_thread(Forwarder(lambda: upstream_url, ready, guard=guard), port)
    url = f"http://127.0.0.1:{port}/headers"
    refused = httpx.get(url)
    seen = httpx.get(url, headers={"Authorization": f"Bearer {key}", "X-Kiln-Key-Id": "1"}).json()
    limited = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
    server.should_exit = True
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["error"]["code"] == "missing_key"
    assert "authorization" not in seen and seen["x-kiln-key-id"] == "3"
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"


def test_the_apps_timeout_bounds_the_wait_for_an_answer_and_for_each_chunk(
    upstream_url: str,
) -> None:
    async def ready() -> bool:
        return True

    seen: list[tuple[int, str]] = []
    port = free_port()
    forwarder = Forwarder(lambda: upstream_url, ready, lambda _m, _p, answer:
                          seen.append((answer.status, answer.note)), timeout_s=0.6)  # fmt: skip
    server = serve_in_thread(forwarder, port)
    url = f"http://127.0.0.1:{port}"
    slow = httpx.get(f"{url}/slow", timeout=10)
    assert slow.status_code == 504 and slow.json()["error"]["code"] == "app_timeout"
    assert "did not answer within 0.6s" in slow.json()["error"]["message"]
    trickle = httpx.get(f"{url}/trickle", timeout=10)  # 1.5 s in all, a chunk every 0.25 s
    assert trickle.status_code == 200 and trickle.text.count("data:") == 6
    with pytest.raises(httpx.RemoteProtocolError):  # cut mid-way: the client sees it broken
        httpx.get(f"{url}/pausing", timeout=10).read()
    server.should_exit = True
    assert (504, "timed out after 0.6s") in seen and (200, "cut: no chunk for 0.6s") in seen


def test_the_routers_answer_tells_first_byte_events_held_time_and_the_path_as_sent(
    upstream_url: str,
) -> None:
    starting = {"left": 2}

    async def ready() -> bool:  # a dyno that is starting: the first request waits for it
        while starting["left"]:
            starting["left"] -= 1
            await asyncio.sleep(0.2)
        return True

    seen: list[tuple[str, Answer]] = []
    port = free_port()
    server = serve_in_thread(
        Forwarder(
            lambda: upstream_url, ready, lambda _m, path, answer: seen.append((path, answer))
        ),
        port,
    )
    url = f"http://127.0.0.1:{port}"
    httpx.get(f"{url}/events", timeout=10)
    httpx.get(f"{url}/a%20b%0a 200 1.0ms?x=1", timeout=10)  # a path that tries to forge a line
    server.should_exit = True
    (events_path, events), (forged_path, plain) = seen
    assert events_path == "/events" and events.chunks == 4
    assert events.held_ms >= 300  # waited for the starting dyno, which the client waited too
    assert events.first_ms is not None and events.held_ms < events.first_ms < events.held_ms + 300
    assert events.ms > events.first_ms + 800  # 4 events 0.3 s apart
    assert " " not in forged_path and plain.chunks == 0 and plain.held_ms == 0
    told = parse(LogRecord(ts=0, source="router", process="d",
                           line=router_line("GET", forged_path, plain)))  # fmt: skip
    assert told is not None and (told.status, told.ms) == (plain.status, round(plain.ms, 1))


def test_a_request_serve_cancels_closes_the_dyno_connection_and_says_so(upstream_url: str) -> None:
    """Serve cancels a replica's request when its client hangs up: the router must then close the
    dyno's connection (how vLLM learns to abort a generation) and its line must say why."""

    async def ready() -> bool:
        return True

    seen: list[Answer] = []
    forwarder = Forwarder(lambda: upstream_url, ready, lambda _m, _p, a: seen.append(a))
    scope = {"type": "http", "method": "GET", "path": "/endless", "raw_path": b"/endless",
             "query_string": b"", "headers": [], "scheme": "http"}  # fmt: skip

    async def journey() -> None:
        bodies: list[bytes] = []
        first = asyncio.Event()

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.body" and message["body"]:
                bodies.append(message["body"])  # type: ignore[arg-type]
                first.set()

        request = asyncio.create_task(forwarder(scope, receive, send))
        await first.wait()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        for _ in range(100):  # the upstream hears the connection close
            if endless_streams_ended:
                break
            await asyncio.sleep(0.02)
        await forwarder.close()

    endless_streams_ended.clear()
    asyncio.run(journey())
    assert endless_streams_ended and endless_streams_ended[0] < 50
    (answer,) = seen
    assert (answer.status, answer.note) == (200, "cancelled: the client left")
    assert router_line("GET", "/endless", answer).endswith("(cancelled: the client left)")


def test_a_client_that_leaves_an_endless_stream_ends_it_at_the_dyno(upstream_url: str) -> None:
    """Serve's proxy notices a client that left only when no chunk waits for it, so a stream
    that never pauses (an LLM generating) would run on for nobody: the router listens itself.
    Under plain uvicorn nothing cancels the app at all, so only the router's listening ends it."""

    async def ready() -> bool:
        return True

    seen: list[Answer] = []
    port = free_port()
    server = serve_in_thread(
        Forwarder(lambda: upstream_url, ready, lambda _m, _p, a: seen.append(a)), port
    )
    endless_streams_ended.clear()
    with httpx.stream("GET", f"http://127.0.0.1:{port}/endless", timeout=10) as response:
        assert next(response.iter_lines()) == "data: token"
    deadline = time.monotonic() + 5
    while not (seen and endless_streams_ended):
        assert time.monotonic() < deadline, "the stream ran on after its client left"
        time.sleep(0.05)
    server.should_exit = True
    (answer,) = seen
    assert answer.note == "cancelled: the client left" and answer.chunks < 200
    assert endless_streams_ended[0] < 200


@pytest.mark.parametrize("length", [1000, 9 * 2**20])  # sent whole; streamed (over 8 MiB)
def test_a_client_that_leaves_mid_upload_never_hands_the_dyno_a_shorter_body(
    upstream_url: str, length: int
) -> None:
    seen: list[Answer] = []

    async def ready() -> bool:
        return True

    port = free_port()
    server = serve_in_thread(
        Forwarder(lambda: upstream_url, ready, lambda _m, _p, a: seen.append(a)), port
    )
    before = len(DIGESTED)
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"POST /digest HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % length)
        client.sendall(b"x" * 100)
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    server.should_exit = True
    assert [(a.status, a.note) for a in seen] == [(499, CLIENT_LEFT)]
    assert len(DIGESTED) == before  # the app never took a body as whole
