"""``/tokens``: platform tokens, the credentials of the API, the CLI and git pushes."""

from __future__ import annotations

from fastapi import APIRouter, status

from kiln.api.deps import StoreDep
from kiln.models import NewToken, TokenCreate, TokenInfo

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.get("")
def list_tokens(store: StoreDep) -> list[TokenInfo]:
    return store.list_tokens()


@router.post("", status_code=status.HTTP_201_CREATED)
def create_token(body: TokenCreate, store: StoreDep) -> NewToken:
    return store.create_token(
        body.name, scope=body.scope, apps=body.apps, expires_in_s=body.expires_in_s
    )


@router.delete("/{token_id}")
def revoke_token(token_id: int, store: StoreDep) -> TokenInfo:
    return store.revoke_token(token_id)
