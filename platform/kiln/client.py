"""The typed HTTP client of the control-plane API, shared by the CLI and the git hook; it turns
API errors back into KilnErrors. The API's paths are built here too, in one place.

client = ApiClient.from_environment()
client.get(APPS, list[AppInfo])
client.get(app_path("chat", "releases", 3), ReleaseInfo)      # /apps/chat/releases/3
"""

from __future__ import annotations

__all__ = [
    "APPS",
    "MODELS",
    "NODES",
    "NODE_STATUS",
    "STATUS",
    "TOKENS",
    "ApiClient",
    "app_path",
    "await_release",
    "build_and_follow",
    "path",
]

import time
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar
from urllib.parse import quote

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
from kiln.models import (
    AppInfo,
    BuildEvent,
    BuildStatus,
    ErrorBody,
    PlatformStatus,
    ProcessList,
    ReleaseInfo,
    ReleaseStatus,
)

T = TypeVar("T")

APPS = "/apps"
TOKENS = "/tokens"
STATUS = "/status"
NODES = "/nodes"
NODE_STATUS = "/nodes/status"
MODELS = "/models"


def path(*parts: str | int) -> str:
    """``/part/part``, each part quoted: a name with a slash or a space stays one part."""
    return "/" + "/".join(quote(str(part), safe="") for part in parts)


def app_path(app: str, *parts: str | int) -> str:
    """A path under an app: ``app_path("chat", "config")`` -> ``/apps/chat/config``."""
    return path("apps", app, *parts)


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


# -- following a deploy (kiln deploy, and git push's pre-receive hook) ----------------------------

Say = Callable[[str], None]


def build_and_follow(
    client: ApiClient, name: str, archive: IO[bytes], say: Say, **params: str
) -> int | None:
    """Upload a source archive, print its build log as it streams; the release it made, or
    KilnError naming the failure."""
    result = None
    for raw in client.upload_lines(app_path(name, "builds"), archive, "application/gzip", **params):
        if not raw.strip():
            continue
        event = BuildEvent.model_validate_json(raw)
        if event.line is not None:
            say(event.line)
        elif event.error is not None:
            raise KilnError(event.error.message, code=event.error.code)
        elif event.build is not None:
            result = event.build
    if result is None:
        raise KilnError(
            f"the build stream ended without a result; see kiln builds -a {name}", code="no_result"
        )
    if result.status != BuildStatus.SUCCEEDED:
        raise KilnError(
            f"build {result.id} failed: {result.error}. Fix it and deploy again "
            f"(full log: kiln builds:log {result.id} -a {name})",
            code="build_failed",
        )
    return result.release


def await_release(
    client: ApiClient, name: str, version: int | None, wait_s: float, say: Say
) -> None:
    """Follow the release until it is live (print its URL) or has failed (say why, raise);
    while it waits (for GPUs, say), say why every so often."""
    if version is None:
        return
    if not client.get(STATUS, PlatformStatus).run:
        say(f"-----> v{version} recorded; this platform runs no apps (kiln up --no-run)")
        return
    say(f"-----> Launching v{version}")
    started = time.monotonic()
    said = started
    while True:
        if time.monotonic() - said > 20:
            said = time.monotonic()
            waiting = client.get(app_path(name, "ps"), ProcessList).message.splitlines()
            say(
                f"       still starting after {said - started:.0f}s"
                + (f": {waiting[0][:200]}" if waiting else "")
            )
        if time.monotonic() - started > wait_s:
            raise KilnError(
                f"v{version} of {name} is not live after {wait_s:.0f}s; it may still start (the "
                f"previous release keeps serving meanwhile): see kiln ps -a {name}",
                code="release_pending",
            )
        release = client.get(app_path(name, "releases", version), ReleaseInfo)
        if release.status is ReleaseStatus.CANARY:
            say(f"-----> v{version} runs as a canary on {release.canary}% of the replicas after "
                f"{time.monotonic() - started:.1f}s; the rest serve the previous release")  # fmt: skip
            say(f"       Next: kiln canary -a {name}   |   kiln canary:promote -a {name}")
            return
        if release.status is ReleaseStatus.SUCCEEDED:
            url = client.get(app_path(name), AppInfo).url
            say(f"-----> v{version} is live in {time.monotonic() - started:.1f}s: {url}")
            say(f"       Next: curl {url}   |   kiln logs -a {name} --tail")
            return
        if release.status is ReleaseStatus.FAILED:
            say(f" !     v{version} failed to start; the previous release keeps serving.")
            for line in (release.status_message or "").splitlines():
                say(f" !     {line}")
            raise KilnError(
                f"release v{version} of {name} did not start (see above; kiln logs -a {name})",
                code="release_failed",
            )
        time.sleep(0.5)
