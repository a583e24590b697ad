"""``/git/<app>.git``: the app's repository over git's smart HTTP protocol.

Requests go to git's own ``http-backend`` (CGI), so the stock git client works with no plugin.
Auth is HTTP Basic with a platform token as the password (any user name), so git's credential
helpers work. The request body is spooled to a file before the backend runs (a streamed body
behind uvicorn ends pushes with "early EOF"); the response streams, so the build log reaches the
pusher line by line. Pushes to one app run one at a time; a second waits for the first.
"""

from __future__ import annotations

__all__ = ["router"]

import asyncio
import base64
import binascii
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from kiln.access import Level, refusal
from kiln.api.auth import check_token, client_address
from kiln.api.deps import PlatformDep
from kiln.control.platform import Platform
from kiln.errors import Forbidden, RateLimited, Unauthorized
from kiln.git.repos import ensure_repo
from kiln.models import TokenInfo
from kiln.route.keys import retry_after

logger = logging.getLogger(__name__)
router = APIRouter(tags=["git"], include_in_schema=False)
_SPOOL_IN_MEMORY = 1 << 20


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            _user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password
    return None


def _authenticate(
    request: Request, platform: Platform, app: str, pushing: bool
) -> tuple[str, TokenInfo]:
    """The caller's token, if it may fetch from (read) or push to (deploy) ``app``."""
    secret = _token(request)
    try:
        found = check_token(platform.store, platform.auth_throttle, client_address(request), secret)
    except Unauthorized:
        raise Unauthorized(
            "git needs a platform token as the password (any user name): run kiln git:remote "
            "to set up the credential helper, or create a token with kiln tokens:create",
            code="invalid_token" if secret else "missing_token",
        ) from None
    reason = refusal(found, Level.DEPLOY if pushing else Level.READ, app)
    if reason is not None:
        raise Forbidden(reason, code="out_of_scope")
    assert secret is not None
    return secret, found


@router.api_route("/git/{app}.git/{path:path}", methods=["GET", "POST"])
async def git_backend(app: str, path: str, request: Request, platform: PlatformDep) -> Response:
    receive_pack = (
        path == "git-receive-pack" or request.query_params.get("service") == "git-receive-pack"
    )
    try:
        token, caller = _authenticate(request, platform, app, pushing=receive_pack)
    except (Unauthorized, Forbidden, RateLimited) as exc:
        # Plain text: git prints it to the pusher as it is.
        headers = {"WWW-Authenticate": 'Basic realm="Kiln"'} if exc.status == 401 else {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = retry_after(exc.retry_after_s)
        return Response(
            exc.message + "\n", status_code=exc.status, media_type="text/plain", headers=headers
        )
    store, settings = platform.store, platform.settings
    store.get_app(app)  # 404 for an app that does not exist (only after auth)
    repo = await asyncio.to_thread(ensure_repo, settings.home, app, settings.max_upload_bytes)
    body = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115 - closed below
    size = 0
    async for chunk in request.stream():
        body.write(chunk)
        size += len(chunk)
    body.seek(0)

    pushing = request.method == "POST" and path == "git-receive-pack"
    waited = 0.0
    lock: asyncio.Lock | None = None
    if pushing:
        lock = platform.push_locks.setdefault(app, asyncio.Lock())
        started = time.monotonic()
        await lock.acquire()
        waited = time.monotonic() - started
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(settings.home),
        "GIT_PROJECT_ROOT": str(repo.parent),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": f"/{repo.name}/{path}",
        "REQUEST_METHOD": request.method,
        "QUERY_STRING": request.url.query,
        "CONTENT_TYPE": request.headers.get("content-type", ""),
        "CONTENT_LENGTH": str(size),
        "REMOTE_USER": caller.name,
        "REMOTE_ADDR": request.client.host if request.client else "",
        # The pre-receive hook builds through the API, as the pusher.
        "KILN_APP": app,
        "KILN_API_URL": settings.api_url,
        "KILN_TOKEN": token,
        "KILN_HOME": str(settings.home),
        "KILN_PUSH_WAITED_S": f"{waited:.1f}",
    }
    if request.headers.get("content-encoding"):
        env["HTTP_CONTENT_ENCODING"] = request.headers["content-encoding"]
    if request.headers.get("git-protocol"):
        env["GIT_PROTOCOL"] = request.headers["git-protocol"]
    try:
        process = await asyncio.create_subprocess_exec(
            "git", "http-backend", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        feed = asyncio.create_task(_feed(process.stdin, body))
        status, headers = await _cgi_headers(process.stdout)
    except BaseException:
        body.close()
        if lock is not None:
            lock.release()
        raise

    async def stream() -> AsyncIterator[bytes]:
        assert process.stdout is not None and process.stderr is not None
        try:
            while chunk := await process.stdout.read(65536):
                yield chunk
            await feed
            errors = await process.stderr.read()
            if await process.wait() != 0 or errors:
                logger.info(
                    "git http-backend for %s: %s", app, errors.decode(errors="replace").strip()
                )
        finally:
            body.close()
            if lock is not None:
                lock.release()

    return StreamingResponse(stream(), status_code=status, headers=headers)


async def _feed(stdin: asyncio.StreamWriter, body: tempfile.SpooledTemporaryFile[bytes]) -> None:
    try:
        while chunk := body.read(65536):
            stdin.write(chunk)
            await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        stdin.close()


async def _cgi_headers(stdout: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status = 200
    headers: dict[str, str] = {}
    while True:
        line = (await stdout.readline()).decode("latin-1").rstrip("\r\n")
        if not line:
            return status, headers
        key, _, value = line.partition(":")
        if key.lower() == "status":
            status = int(value.strip().split()[0])
        else:
            headers[key.strip()] = value.strip()
