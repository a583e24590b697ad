"""The control-plane API: ``create_app(settings)`` builds the FastAPI app; nothing at import time.

app = create_app(Settings())          # opens and migrates the store
uvicorn.run(app, port=7100)
"""

from __future__ import annotations

__all__ = ["create_app"]

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from kiln import __version__
from kiln.api.access import AuthThrottle
from kiln.api.auth import authorize
from kiln.api.routes import (
    addons,
    apps,
    builds,
    config,
    formation,
    logs,
    metrics,
    models,
    nodes,
    releases,
    system,
    tokens,
)
from kiln.builds.builder import Builder, choose_artifact_builders
from kiln.errors import KilnError, RateLimited
from kiln.git import http as git_http
from kiln.gpu.cluster import GpuCluster
from kiln.models import ErrorBody, ErrorDetail
from kiln.route.keys import retry_after
from kiln.run.reconciler import Reconciler
from kiln.settings import Settings
from kiln.store import Store


def error_response(
    status: int, code: str, message: str, retry_after_s: float | None = None
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if retry_after_s is not None:
        headers["Retry-After"] = retry_after(retry_after_s)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers or None)


async def _kiln_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KilnError)
    wait = exc.retry_after_s if isinstance(exc, RateLimited) else None
    return error_response(exc.status, exc.code, exc.message, wait)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"] if part != "body")
        problems.append(f"{where}: {error['msg']}")
    return error_response(422, "invalid_request", "invalid request: " + "; ".join(problems))


def create_app(
    settings: Settings,
    store: Store | None = None,
    builder: Builder | None = None,
    reconciler: Reconciler | None = None,
) -> FastAPI:
    """The API over ``store`` (opened from ``settings`` when not given, and closed with the app).

    ``builder`` defaults to images where a container engine answers, else slugs. With a
    ``reconciler``, the app runs it while serving (the run stage); without, nothing is served.
    """
    owned = store is None
    the_store = store or Store.open(settings)
    the_builder = builder or Builder(the_store, settings, choose_artifact_builders(settings))
    the_store.builds.fail_interrupted()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if reconciler is not None:
            reconciler.start()
        yield
        if reconciler is not None:
            reconciler.stop()
        if owned:
            the_store.close()

    api = FastAPI(
        title="Kiln control plane",
        version=__version__,
        lifespan=lifespan,
        responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}},
    )
    api.state.store = the_store
    api.state.settings = settings
    api.state.builder = the_builder
    api.state.tasks = set()
    api.state.reconciler = reconciler
    api.state.push_locks = {}
    api.state.gpus = GpuCluster(settings)
    api.state.auth_throttle = AuthThrottle()
    api.add_exception_handler(KilnError, _kiln_error)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.include_router(system.public)
    api.include_router(git_http.router)  # its own auth: HTTP Basic, for git's credential helpers
    for module in (addons, apps, builds, config, formation, logs, metrics, models, nodes, releases,
                   system, tokens):  # fmt: skip
        api.include_router(module.router, dependencies=[Depends(authorize)])
    return api
