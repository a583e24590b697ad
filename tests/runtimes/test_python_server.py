"""The python runtime's server: ASGI as is, WSGI wrapped, and the health path always answered."""

import httpx
import pytest
from fastapi import FastAPI

from kiln_runtime.dyno import with_health
from kiln_runtime.python.server import as_asgi


def wsgi_app(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"wsgi {environ['PATH_INFO']}".encode()]


async def get(app, path: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dyno") as client:
        return await client.get(path)


@pytest.mark.anyio
async def test_an_app_without_a_health_route_is_healthy_once_serving() -> None:
    app = FastAPI()
    app.get("/")(lambda: {"hi": 1})
    wrapped = with_health(as_asgi(app), "/healthz")
    assert (await get(wrapped, "/healthz")).json() == {"status": "ok"}
    assert (await get(wrapped, "/")).json() == {"hi": 1}
    assert (await get(wrapped, "/missing")).status_code == 404  # only the health path is covered


@pytest.mark.anyio
async def test_an_app_with_its_own_health_route_keeps_its_answer() -> None:
    app = FastAPI()
    app.get("/healthz")(lambda: {"mine": True})
    failing = FastAPI()

    @failing.get("/healthz")
    def sick() -> None:
        raise RuntimeError("not ready")

    assert (await get(with_health(app, "/healthz"), "/healthz")).json() == {"mine": True}
    sick_app = with_health(failing, "/healthz")
    with pytest.raises(RuntimeError):
        await get(sick_app, "/healthz")


@pytest.mark.anyio
async def test_wsgi_apps_are_served_through_an_adapter() -> None:
    wrapped = with_health(as_asgi(wsgi_app), "/healthz")
    assert (await get(wrapped, "/x")).text == "wsgi /x"
    assert (await get(wrapped, "/healthz")).text == "wsgi /healthz"  # a WSGI app answered 200


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


APP = """
from kiln_runtime.dyno import serve

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})

serve(app)
"""


@pytest.mark.parametrize("asked", ["", "1"])
def test_a_dyno_logs_a_line_per_request_only_when_asked(tmp_path, asked: str) -> None:  # type: ignore[no-untyped-def]
    """The router's line is the access log; uvicorn's, the same again, is off unless asked."""
    import os
    import subprocess
    import sys
    import time

    socket = tmp_path / "dyno.sock"
    env = {**os.environ, "KILN_SOCKET": str(socket), "KILN_ACCESS_LOG": asked}
    process = subprocess.Popen([sys.executable, "-c", APP], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket))) as client:
            assert client.get("http://dyno/some/path").text == "hi"
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "Uvicorn running" in output  # its own lines are there either way
    assert ('"GET /some/path HTTP/1.1" 200' in output) == bool(asked)
