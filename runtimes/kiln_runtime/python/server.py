"""Serve the app named by ``$KILN_ENTRYPOINT``: ASGI directly, WSGI (Flask...) through a2wsgi."""

from __future__ import annotations

__all__ = ["as_asgi", "load_object", "main"]

import importlib
import inspect
import os
from typing import Any

from kiln_runtime.dyno import ASGIApp, health_path, serve, with_health


def load_object(entrypoint: str) -> Any:
    """Import ``module:attr.path`` and return the object."""
    module_name, _, attribute = entrypoint.partition(":")
    found: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found


def _is_asgi(app: Any) -> bool:
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004 - instances: look at their __call__
    return call is not None and inspect.iscoroutinefunction(call)


def as_asgi(app: Any) -> ASGIApp:
    """The app as ASGI: itself if it is ASGI, else wrapped as a WSGI app."""
    if _is_asgi(app):
        asgi: ASGIApp = app
        return asgi
    from a2wsgi import WSGIMiddleware

    wrapped: ASGIApp = WSGIMiddleware(app)  # type: ignore[assignment]
    return wrapped


def main() -> None:
    entrypoint = os.environ.get("KILN_ENTRYPOINT", "main:app")
    serve(with_health(as_asgi(load_object(entrypoint)), health_path()))
