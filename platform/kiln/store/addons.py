"""Add-on attachments and app API keys, in the store (``store.addons``, ``store.keys``)."""

from __future__ import annotations

__all__ = ["AddonStore", "KeyStore"]

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kiln import tokens
from kiln.errors import Conflict, NotFound
from kiln.models import AddonInfo, ApiKeyInfo, KeyRule, NewApiKey
from kiln.store.tables import Addon, ApiKey, App, utcnow

SessionFactory = Callable[[], AbstractContextManager[Session]]
AppLookup = Callable[[Session, str], App]


class AddonStore:
    def __init__(self, session: SessionFactory, app: AppLookup) -> None:
        self._session = session
        self._app = app

    def add(self, app: str, kind: str, name: str, state: dict[str, Any]) -> None:
        try:
            with self._session() as session:
                session.add(
                    Addon(
                        app_id=self._app(session, app).id,
                        kind=kind,
                        name=name,
                        state=json.dumps(state),
                    )
                )
        except IntegrityError:
            raise Conflict(
                f"{app} already has an add-on named {name}; see kiln addons -a {app}",
                code="addon_exists",
            ) from None

    def all(self, app: str) -> list[tuple[str, str, datetime, dict[str, Any]]]:
        """(name, kind, created_at, state) of each add-on of the app."""
        with self._session() as session:
            rows = session.scalars(
                select(Addon).where(Addon.app_id == self._app(session, app).id).order_by(Addon.name)
            )
            return [(a.name, a.kind, a.created_at, json.loads(a.state)) for a in rows]

    def get(self, app: str, name: str) -> tuple[str, dict[str, Any]]:
        for found, kind, _created, state in self.all(app):
            if found == name:
                return kind, state
        raise NotFound(
            f"{app} has no add-on named {name}; see kiln addons -a {app}", code="addon_not_found"
        )

    def remove(self, app: str, name: str) -> None:
        with self._session() as session:
            owner = self._app(session, app)
            addon = session.scalar(
                select(Addon).where(Addon.app_id == owner.id, Addon.name == name)
            )
            if addon is not None:
                session.delete(addon)

    def has_kind(self, app: str, kind: str) -> bool:
        return any(k == kind for _n, k, _c, _s in self.all(app))

    def info(self, app: str, config_vars: dict[str, list[str]]) -> list[AddonInfo]:
        return [
            AddonInfo(
                name=name, kind=kind, created_at=created, config_vars=config_vars.get(name, [])
            )
            for name, kind, created, _state in self.all(app)
        ]


class KeyStore:
    def __init__(self, session: SessionFactory, app: AppLookup) -> None:
        self._session = session
        self._app = app

    def create(
        self, app: str, name: str, expires_in_s: float | None, rate_per_s: float | None
    ) -> NewApiKey:
        secret = tokens.mint(tokens.API_KEY)
        with self._session() as session:
            key = ApiKey(
                app_id=self._app(session, app).id, name=name, prefix=tokens.display_prefix(secret),
                digest=tokens.digest(secret), rate_per_s=rate_per_s,
                expires_at=utcnow() + timedelta(seconds=expires_in_s) if expires_in_s else None,
            )  # fmt: skip
            session.add(key)
            session.flush()
            return NewApiKey(**_info(key).model_dump(), key=secret)

    def all(self, app: str) -> list[ApiKeyInfo]:
        with self._session() as session:
            owner = self._app(session, app)
            return [
                _info(k)
                for k in session.scalars(
                    select(ApiKey).where(ApiKey.app_id == owner.id).order_by(ApiKey.id)
                )
            ]

    def revoke(self, app: str, prefix_or_id: str) -> ApiKeyInfo:
        with self._session() as session:
            owner = self._app(session, app)
            keys = session.scalars(
                select(ApiKey).where(ApiKey.app_id == owner.id, ApiKey.revoked_at.is_(None))
            ).all()
            matches = [
                k
                for k in keys
                if str(k.id) == prefix_or_id
                or k.prefix.startswith(prefix_or_id)
                or prefix_or_id.startswith(k.prefix)
            ]
            if len(matches) != 1:
                raise NotFound(
                    f"{'no' if not matches else 'more than one'} active key of {app} matches "
                    f"{prefix_or_id!r}; see kiln keys -a {app}",
                    code="key_not_found",
                )
            matches[0].revoked_at = utcnow()
            return _info(matches[0])

    def rules(self, app: str) -> list[KeyRule]:
        """What the app's replicas check requests against: active keys, as digests."""
        now = utcnow()
        with self._session() as session:
            owner = self._app(session, app)
            rows = session.scalars(
                select(ApiKey).where(ApiKey.app_id == owner.id, ApiKey.revoked_at.is_(None))
            )
            return [
                KeyRule(
                    id=k.id,
                    digest=k.digest,
                    rate_per_s=k.rate_per_s,
                    expires_at=k.expires_at.timestamp() if k.expires_at else None,
                )
                for k in rows
                if k.expires_at is None or k.expires_at > now
            ]


def _info(key: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=key.id, name=key.name, prefix=key.prefix, created_at=key.created_at,
        expires_at=key.expires_at, rate_per_s=key.rate_per_s, revoked=key.revoked_at is not None,
    )  # fmt: skip
