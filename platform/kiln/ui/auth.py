"""Who is looking at the dashboard: sign-in with a platform token, sign-out, and the checks
every page and form makes (a live session, the token still valid, its scope, the form's CSRF
token)."""

from __future__ import annotations

__all__ = ["Viewer", "ViewerDep", "router"]

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kiln.access import needed, refusal
from kiln.api.auth import check_token, client_address
from kiln.api.deps import PlatformDep
from kiln.errors import Forbidden, KilnError
from kiln.models import TokenInfo
from kiln.ui.session import COOKIE, LOGIN_COOKIE, Session
from kiln.ui.templates import page

router = APIRouter()


class SignInNeeded(Exception):
    """No live session: pages send the browser to the sign-in form."""


@dataclass
class Viewer:
    token: TokenInfo
    session: Session

    def may(self, method: str, route: str, app: str | None = None) -> bool:
        """Whether the token may make the API call behind a button (its scope, its apps)."""
        return refusal(self.token, needed(method, route), app) is None

    def require(self, method: str, route: str, app: str | None = None) -> None:
        reason = refusal(self.token, needed(method, route), app)
        if reason is not None:
            raise Forbidden(reason, code="out_of_scope")

    def check_form(self, csrf: str | None) -> None:
        if not self.session.csrf_ok(csrf):
            raise Forbidden(
                "the form's CSRF token is missing or wrong (an old page, or a form sent from "
                "another site): reload the page and try again",
                code="bad_csrf",
            )


def viewer(request: Request, platform: PlatformDep) -> Viewer:
    sid = request.cookies.get(COOKIE)
    session = platform.ui_sessions.get(sid)
    if session is None:
        raise SignInNeeded
    try:
        token = check_token(platform.store, platform.auth_throttle, client_address(request),
                            session.secret)  # fmt: skip
    except KilnError:  # revoked or expired since sign-in: the session ends with it
        platform.ui_sessions.close(sid)
        raise SignInNeeded from None
    return Viewer(token, session)


ViewerDep = Annotated[Viewer, Depends(viewer)]


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _login_form(request: Request, message: str = "", status: int = 200) -> Response:
    csrf = secrets.token_urlsafe(24)
    response = page(request, "login.html", {"csrf": csrf, "message": message}, status=status)
    response.set_cookie(LOGIN_COOKIE, csrf, max_age=3600, path="/ui", httponly=True,
                        samesite="strict", secure=_secure(request))  # fmt: skip
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return _login_form(request)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request, platform: PlatformDep,
    token: Annotated[str, Form(max_length=400)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:  # fmt: skip
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not (csrf and expected and secrets.compare_digest(csrf, expected)):
        return _login_form(request, "The sign-in form expired or came from another site: "
                           "try again.", status=403)  # fmt: skip
    try:
        check_token(platform.store, platform.auth_throttle, client_address(request),
                    token.strip() or None)  # fmt: skip
    except KilnError as exc:
        return _login_form(request, exc.message, status=exc.status)
    sid, _session = platform.ui_sessions.open(token.strip())
    response = RedirectResponse("/ui/", status_code=303)
    response.set_cookie(COOKIE, sid, path="/ui", httponly=True, samesite="strict",
                        secure=_secure(request))  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path="/ui")
    return response


@router.post("/logout")
def logout(
    request: Request, platform: PlatformDep, who: ViewerDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:  # fmt: skip
    who.check_form(csrf)
    platform.ui_sessions.close(request.cookies.get(COOKIE))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response
