"""The web dashboard, served by the control plane at ``/ui``: server-rendered pages (Jinja2),
htmx and server-sent events for the live parts, uPlot for the charts, all vendored under
``static/``: no build step. Signed in with a platform token (``kiln.ui.auth``).

api.include_router(kiln.ui.router, prefix="/ui")
"""

from __future__ import annotations

__all__ = ["SignInNeeded", "mount"]

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from kiln.errors import KilnError
from kiln.ui import auth, live, pages
from kiln.ui.auth import SignInNeeded
from kiln.ui.templates import STATIC, page


async def _sign_in(request: Request, _exc: Exception) -> Response:
    if request.method == "GET" and "text/event-stream" not in request.headers.get("accept", ""):
        return RedirectResponse("/ui/login", status_code=303)
    return HTMLResponse("sign in first: /ui/login", status_code=401)


def error_page(request: Request, exc: KilnError) -> Response:
    """A KilnError under /ui, as a page rather than the API's JSON."""
    return page(request, "error.html", {"message": exc.message, "code": exc.code},
                status=exc.status)  # fmt: skip


def mount(api: FastAPI) -> None:
    api.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    for module in (auth, pages, live):
        api.include_router(module.router, prefix="/ui", include_in_schema=False)
    api.add_exception_handler(SignInNeeded, _sign_in)

    @api.get("/ui", include_in_schema=False)
    def ui_root() -> Response:
        return RedirectResponse("/ui/", status_code=307)
