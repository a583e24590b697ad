"""Platform-token authentication and authorisation: every route but ``/healthz`` needs
``Authorization: Bearer``, from a token whose scope covers the call (``kiln.access``)."""

from __future__ import annotations

__all__ = ["Caller", "authorize", "check_token", "client_address", "require_token"]

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kiln.access import AuthThrottle, needed, refusal
from kiln.api.deps import PlatformDep
from kiln.errors import Forbidden, RateLimited, Unauthorized
from kiln.models import TokenInfo
from kiln.store import Store

_bearer = HTTPBearer(auto_error=False, description="A platform token (kiln tokens:create).")


def check_token(store: Store, throttle: AuthThrottle, client: str, secret: str | None) -> TokenInfo:
    """The token ``secret`` belongs to. Raises Unauthorized (saying nothing about any resource),
    Forbidden for an expired token, or RateLimited after too many failures from ``client``."""
    wait = throttle.wait_s(client)
    if wait > 0:
        raise RateLimited(
            f"too many failed sign-ins from {client}; wait {wait:.0f}s before trying again",
            retry_after_s=wait,
            code="too_many_failures",
        )
    if not secret:
        throttle.failed(client)
        raise Unauthorized(
            "missing platform token: send 'Authorization: Bearer TOKEN'. The CLI uses the token "
            "`kiln up` stored, or KILN_TOKEN; create more with kiln tokens:create",
            code="missing_token",
        )
    token = store.authenticate(secret)
    if token is None:
        throttle.failed(client)
        raise Unauthorized(
            "invalid platform token: it is malformed, revoked, or from another platform. "
            "Check KILN_TOKEN, or log in again with a token from kiln tokens:create",
            code="invalid_token",
        )
    if token.expires_at is not None and token.expires_at <= datetime.now(UTC):
        raise Forbidden(
            f"the token {token.name} expired at {token.expires_at:%Y-%m-%d %H:%M} UTC; ask an "
            "admin for a new one (kiln tokens:create)",
            code="token_expired",
        )
    return token


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def require_token(
    request: Request,
    platform: PlatformDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenInfo:
    """The caller's valid, unexpired token."""
    secret = credentials.credentials if credentials is not None else None
    return check_token(platform.store, platform.auth_throttle, client_address(request), secret)


def authorize(request: Request, token: Annotated[TokenInfo, Depends(require_token)]) -> TokenInfo:
    """403 unless the token's scope covers this route (and its ``{app}``, if it has one)."""
    route = getattr(request.scope.get("route"), "path", request.url.path)
    level = needed(request.method, route)
    reason = refusal(token, level, request.path_params.get("app"))
    if reason is not None:
        raise Forbidden(reason, code="out_of_scope")
    return token


Caller = Annotated[TokenInfo, Depends(require_token)]
