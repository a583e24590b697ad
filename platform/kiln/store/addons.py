"""Add-on attachments and app API keys, in the store (``store.addons``, ``store.keys``)."""

from __future__ import annotations

__all__ = [
    "ATTACHED",
    "PROVISIONING",
    "AddonAttachment",
    "AddonRecord",
    "AddonStore",
    "KeyStore",
    "attach_in",
]

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kiln import tokens
from kiln.errors import Conflict, NotFound
from kiln.models import AddonInfo, ApiKeyInfo, KeyRule, NewApiKey
from kiln.store.tables import Addon, ApiKey, App, utcnow

SessionFactory = Callable[[], AbstractContextManager[Session]]
PROVISIONING = "provisioning"
ATTACHED = "attached"
AppLookup = Callable[[Session, str], App]


@dataclass(frozen=True)
class AddonRecord:
    """An add-on of an app, as the store keeps it (with its provider's state)."""

    name: str
    kind: str
    created_at: datetime
    state: dict[str, Any]
    status: str = ATTACHED

    @property
    def config_vars(self) -> list[str]:
        return list(self.state.get("config_vars", []))

    def info(self, status: str | None = None) -> AddonInfo:
        return AddonInfo(name=self.name, kind=self.kind, created_at=self.created_at,
                         config_vars=self.config_vars, status=status or "ready")  # fmt: skip


@dataclass(frozen=True)
class AddonAttachment:
    """A provisioned add-on on its way into a release: what its provider keeps, what it injects."""

    name: str
    state: dict[str, Any]
    config_vars: dict[str, str]


class AddonStore:
    """``store.addons``. Provisioning is journaled: ``begin`` records the add-on as
    provisioning (with what undoing it needs) before its provider makes anything; the release
    that carries it flips it to attached in the same transaction (``Store.release_deploy``,
    ``Store.attach_addon``); a row left provisioning by a stopped control plane is undone at
    the next start (``pending``)."""

    def __init__(self, session: SessionFactory, app: AppLookup) -> None:
        self._session = session
        self._app = app

    def begin(
        self, app: str, kind: str, name: str, state: dict[str, Any], build_id: int | None = None
    ) -> None:
        try:
            with self._session() as session:
                session.add(
                    Addon(app_id=self._app(session, app).id, kind=kind, name=name,
                          state=json.dumps(state), status=PROVISIONING, build_id=build_id)
                )  # fmt: skip
        except IntegrityError:
            raise Conflict(
                f"{app} already has an add-on named {name}; see kiln addons -a {app}",
                code="addon_exists",
            ) from None

    def abandon(self, app: str, name: str) -> None:
        """Forget an add-on whose provisioning was undone."""
        with self._session() as session:
            owner = self._app(session, app)
            session.execute(
                delete(Addon).where(Addon.app_id == owner.id, Addon.name == name,
                                    Addon.status == PROVISIONING)
            )  # fmt: skip

    def pending(self) -> list[tuple[str, AddonRecord]]:
        """Every add-on still provisioning, with its app: what a stopped deploy left."""
        with self._session() as session:
            rows = session.execute(
                select(App.name, Addon).join(App).where(Addon.status == PROVISIONING)
            ).all()
            return [(app, _record(addon)) for app, addon in rows]

    def all(self, app: str) -> list[AddonRecord]:
        """The app's attached add-ons, by name."""
        with self._session() as session:
            rows = session.scalars(
                select(Addon)
                .where(Addon.app_id == self._app(session, app).id, Addon.status == ATTACHED)
                .order_by(Addon.name)
            )
            return [_record(a) for a in rows]

    def get(self, app: str, name: str) -> AddonRecord:
        for record in self.all(app):
            if record.name == name:
                return record
        raise NotFound(
            f"{app} has no add-on named {name}; see kiln addons -a {app}", code="addon_not_found"
        )

    def remove(self, app: str, name: str) -> None:
        with self._session() as session:
            owner = self._app(session, app)
            session.execute(delete(Addon).where(Addon.app_id == owner.id, Addon.name == name))

    def has_kind(self, app: str, kind: str) -> bool:
        return any(record.kind == kind for record in self.all(app))


def attach_in(session: Session, app: App, name: str, state: dict[str, Any]) -> None:
    """Within a release's transaction: the journaled add-on becomes attached."""
    addon = session.scalar(
        select(Addon).where(Addon.app_id == app.id, Addon.name == name).with_for_update()
    )
    assert addon is not None and addon.status == PROVISIONING, f"add-on {name} was not begun"
    addon.status = ATTACHED
    addon.state = json.dumps(state)


def _record(addon: Addon) -> AddonRecord:
    return AddonRecord(name=addon.name, kind=addon.kind, created_at=addon.created_at,
                       state=json.loads(addon.state), status=addon.status)  # fmt: skip


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

    def usage_through(self, app: str) -> float:
        """The log time up to which the app's keys' use is counted."""
        with self._session() as session:
            return self._app(session, app).usage_through or 0.0

    def add_usage(self, app: str, counts: dict[int, tuple[int, float]], through: float) -> None:
        """Add requests per key (with the time of the last) counted up to ``through``."""
        with self._session() as session:
            owner = self._app(session, app)
            for key in session.scalars(
                select(ApiKey).where(ApiKey.app_id == owner.id, ApiKey.id.in_(list(counts)))
            ):
                count, last = counts[key.id]
                key.requests += count
                used = datetime.fromtimestamp(last, UTC)
                if key.last_used_at is None or used > key.last_used_at:
                    key.last_used_at = used
            owner.usage_through = through

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
        requests=key.requests or 0, last_used_at=key.last_used_at,
    )  # fmt: skip
