"""The control-plane API: ``create_app(platform)`` builds the FastAPI app; nothing at import time.

app = create_app(Platform(Settings()))    # opens and migrates the store
uvicorn.run(app, port=7100)
"""

from __future__ import annotations

__all__ = ["create_app"]

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from kiln import __version__, ui
from kiln.api.auth import authorize
from kiln.api.limits import BodyLimit
from kiln.api.routes import (
    addons,
    apps,
    builds,
    canary,
    config,
    formation,
    gc,
    logs,
    metrics,
    models,
    nodes,
    releases,
    system,
    tokens,
    traffic,
)
from kiln.control.platform import Platform
from kiln.errors import KilnError, RateLimited
from kiln.git import http as git_http
from kiln.models import ErrorBody, ErrorDetail
from kiln.route.keys import retry_after

API_BODY_LIMIT = 2**20


def error_response(
    status: int, code: str, message: str, retry_after_s: float | None = None
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if retry_after_s is not None:
        headers["Retry-After"] = retry_after(retry_after_s)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers or None)


async def _kiln_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KilnError)
    if request.url.path.startswith("/ui/"):
        return ui.error_page(request, exc)
    wait = exc.retry_after_s if isinstance(exc, RateLimited) else None
    return error_response(exc.status, exc.code, exc.message, wait)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"] if part != "body")
        problems.append(f"{where}: {error['msg']}")
    return error_response(422, "invalid_request", "invalid request: " + "; ".join(problems))


def create_app(platform: Platform) -> FastAPI:
    """The API over ``platform``'s services; it starts the platform with the server and stops it
    with the server."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        platform.start()
        yield
        platform.stop()

    api = FastAPI(
        title="Kiln control plane",
        version=__version__,
        lifespan=lifespan,
        responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}},
    )
    api.state.platform = platform
    # Bodies are bounded before authentication and parsing: 1 MiB, or the upload limit.
    api.add_middleware(
        BodyLimit, default=API_BODY_LIMIT, uploads=platform.settings.max_upload_bytes
    )
    api.add_exception_handler(KilnError, _kiln_error)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.include_router(system.public)
    ui.mount(api)  # the dashboard: its own sign-in (a session cookie), pages under /ui
    api.include_router(git_http.router)  # its own auth: HTTP Basic, for git's credential helpers
    for module in (addons, apps, builds, canary, config, formation, gc, logs, metrics, models,
                   nodes, releases, system, tokens, traffic):  # fmt: skip
        api.include_router(module.router, dependencies=[Depends(authorize)])
    return api
