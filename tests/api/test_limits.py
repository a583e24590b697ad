"""Bounded bodies, from a client that sends too much: refused with 413 before its token is
checked or its body parsed, whether it says the size up front or streams it."""

import socket
from collections.abc import Iterator

import httpx

from tests.conftest import LiveApi


def raw_request(api: LiveApi, head: str) -> str:
    """Send only a request's head (a huge Content-Length, no body): what comes back."""
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head.encode())
        return connection.recv(4096).decode(errors="replace")


def test_an_api_body_past_a_mebibyte_is_refused_before_the_token_is_checked(
    live_api: LiveApi,
) -> None:
    response = httpx.patch(f"{live_api.url}/apps/echo/config", content=b"{" + b" " * 2**21 + b"}",
                           headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 413
    assert "over the limit of 1 MiB" in response.json()["error"]["message"]


def test_a_declared_upload_past_the_limit_is_refused_before_a_byte_of_it_is_read(
    live_api: LiveApi,
) -> None:
    answer = raw_request(live_api, "POST /apps/echo/builds HTTP/1.1\r\nHost: x\r\n"
                                   f"Content-Length: {3 * 2**30}\r\n\r\n")  # fmt: skip
    assert answer.startswith("HTTP/1.1 413") and "over the limit of 512 MiB" in answer


def test_a_streamed_body_past_the_limit_is_cut_off(live_api: LiveApi) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            yield b"x" * 2**20

    with live_api.client() as client:
        response = client.post(
            "/tokens", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


def test_ordinary_requests_pass(live_api: LiveApi) -> None:
    with live_api.client() as client:
        assert client.post("/apps", json={"name": "small"}).status_code == 201
