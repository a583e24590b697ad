"""The CLI's typed HTTP client of the control-plane API; it turns API errors back into KilnErrors.

client = ApiClient.from_environment()
client.get("/apps", list[AppInfo])
"""

from __future__ import annotations

__all__ = ["ApiClient"]

from collections.abc import Iterator
from typing import IO, Any, TypeVar

import httpx
from pydantic import TypeAdapter, ValidationError

from kiln.credentials import Credentials, read_credentials
from kiln.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    KilnError,
    NotFound,
    Unauthorized,
    Unavailable,
)
from kiln.models import ErrorBody

T = TypeVar("T")

_BY_STATUS: dict[int, type[KilnError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
    422: InvalidInput,
    503: Unavailable,
}


class ApiClient:
    def __init__(self, credentials: Credentials, transport: httpx.BaseTransport | None = None):
        self.base_url = credentials.api_url.rstrip("/")
        headers = {"Authorization": f"Bearer {credentials.token}"} if credentials.token else {}
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=60.0, transport=transport
        )

    @classmethod
    def from_environment(cls) -> ApiClient:
        return cls(read_credentials())

    def get(self, path: str, into: type[T], **params: Any) -> T:
        return self._call("GET", path, into, params=params or None)

    def post(self, path: str, into: type[T], body: Any = None) -> T:
        return self._call("POST", path, into, json=body)

    def put(self, path: str, into: type[T], body: Any = None) -> T:
        return self._call("PUT", path, into, json=body)

    def stream_lines(self, path: str, **params: str) -> Iterator[str]:
        """GET ``path`` and yield its lines as they arrive (logs, --tail)."""
        try:
            with self._http.stream(
                "GET", path, params=params or None, timeout=httpx.Timeout(60.0, read=None)
            ) as response:
                if response.is_error:
                    response.read()
                    raise _error_from(response)
                yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise Unavailable(
                f"lost the Kiln API at {self.base_url} ({type(exc).__name__})",
                code="api_unreachable",
            ) from None

    def patch(self, path: str, into: type[T], body: Any = None) -> T:
        return self._call("PATCH", path, into, json=body)

    def delete(self, path: str, into: type[T]) -> T:
        return self._call("DELETE", path, into)

    def text(self, path: str) -> str:
        return self._call("GET", path, str, raw=True)

    def upload_lines(
        self, path: str, body: IO[bytes], content_type: str, **params: str
    ) -> Iterator[str]:
        """POST ``body`` and yield the response's lines as they arrive (a streamed build log)."""
        try:
            with self._http.stream(
                "POST", path, content=_chunks(body), params=params or None,
                headers={"Content-Type": content_type}, timeout=httpx.Timeout(60.0, read=None),
            ) as response:  # fmt: skip
                if response.is_error:
                    response.read()
                    raise _error_from(response)
                yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise Unavailable(
                f"lost the Kiln API at {self.base_url} during the upload or build "
                f"({type(exc).__name__}); the build may go on: see kiln builds",
                code="api_unreachable",
            ) from None

    def _call(self, method: str, path: str, into: type[T], raw: bool = False, **kwargs: Any) -> T:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(
                f"cannot reach the Kiln API at {self.base_url} ({type(exc).__name__}); is the "
                "platform running? Start it with kiln up, or set KILN_API_URL",
                code="api_unreachable",
            ) from None
        if response.is_error:
            raise _error_from(response)
        if response.status_code == 204 or into is type(None):
            return None  # type: ignore[return-value]
        if raw:
            return response.text  # type: ignore[return-value]
        return TypeAdapter(into).validate_json(response.content)


def _chunks(body: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := body.read(size):
        yield chunk


def _error_from(response: httpx.Response) -> KilnError:
    kind = _BY_STATUS.get(response.status_code, KilnError)
    try:
        detail = ErrorBody.model_validate_json(response.content).error
    except ValidationError:
        return kind(
            f"the API answered {response.status_code} {response.reason_phrase} at "
            f"{response.request.url}; is KILN_API_URL a Kiln control plane?",
            code="unexpected_response",
        )
    return kind(detail.message, code=detail.code)
