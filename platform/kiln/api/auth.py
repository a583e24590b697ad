"""Platform-token authentication: every route but ``/healthz`` needs ``Authorization: Bearer``."""

from __future__ import annotations

__all__ = ["get_store", "require_token"]

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kiln.errors import Unauthorized
from kiln.models import TokenInfo
from kiln.store import Store

_bearer = HTTPBearer(auto_error=False, description="A platform token (kiln tokens:create).")


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def require_token(
    store: Annotated[Store, Depends(get_store)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenInfo:
    """The caller's token; 401 (saying nothing about the resource asked for) if it is not valid."""
    if credentials is None:
        raise Unauthorized(
            "missing platform token: send 'Authorization: Bearer TOKEN'. The CLI uses the token "
            "`kiln up` stored, or KILN_TOKEN; create more with kiln tokens:create",
            code="missing_token",
        )
    token = store.authenticate(credentials.credentials)
    if token is None:
        raise Unauthorized(
            "invalid platform token: it is malformed, revoked, or from another platform. "
            "Check KILN_TOKEN, or log in again with a token from kiln tokens:create",
            code="invalid_token",
        )
    return token


Caller = Annotated[TokenInfo, Depends(require_token)]
StoreDep = Annotated[Store, Depends(get_store)]
