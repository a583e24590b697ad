"""The store's tables, as SQLAlchemy 2 typed ORM classes. Migrations in ``migrations/`` build them."""

from __future__ import annotations

__all__ = [
    "Addon",
    "ApiKey",
    "App",
    "Base",
    "Build",
    "Counter",
    "Release",
    "Token",
    "UtcDateTime",
    "utcnow",
]

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Float, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class App(Base):
    __tablename__ = "apps"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(30), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # JSON of kiln.run.spec.Formation (kiln scale / autoscale); None: the manifest's [scaling].
    formation: Mapped[str | None] = mapped_column(Text, default=None)
    # Numbers the app's sandbox (its uid): from a counter, so never one a destroyed app had
    # (SQLite reuses the highest id once its row is gone).
    sandbox_id: Mapped[int | None] = mapped_column(default=None)
    # The log time up to which its API keys' use is counted in the store.
    usage_through: Mapped[float | None] = mapped_column(Float(), default=None)
    releases: Mapped[list[Release]] = relationship(
        back_populates="app", cascade="all, delete-orphan", passive_deletes=True
    )
    builds: Mapped[list[Build]] = relationship(
        back_populates="app", cascade="all, delete-orphan", passive_deletes=True
    )


class Counter(Base):
    """A number that only goes up (``app_sandbox``: the last sandbox id handed out)."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(default=0)


class Release(Base):
    """One immutable, numbered release: what an app runs and with which config."""

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("app_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    version: Mapped[int]
    description: Mapped[str] = mapped_column(Text)
    # The whole config at this release, Fernet-encrypted JSON: never a plaintext value on disk.
    config_sealed: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="succeeded")
    status_message: Mapped[str | None] = mapped_column(Text, default=None)
    actor: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    build_id: Mapped[int | None] = mapped_column(
        ForeignKey("builds.id", ondelete="SET NULL"), default=None
    )
    # JSON of kiln.models.Artifact and of the app's Manifest at the build; None before a deploy.
    artifact: Mapped[str | None] = mapped_column(Text, default=None)
    manifest: Mapped[str | None] = mapped_column(Text, default=None)
    # JSON of a canary rollout: {"canary": 25, "started_at": ..., "ended": "promoted"|...}.
    rollout: Mapped[str | None] = mapped_column(Text, default=None)
    app: Mapped[App] = relationship(back_populates="releases")
    build: Mapped[Build | None] = relationship(lazy="joined")


class Build(Base):
    """One build of an app's source into an artifact, with its whole log."""

    __tablename__ = "builds"

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(20))
    source_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    commit: Mapped[str | None] = mapped_column(String(64), default=None)
    runtime: Mapped[str | None] = mapped_column(String(40), default=None)
    artifact: Mapped[str | None] = mapped_column(Text, default=None)
    manifest: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    log: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    app: Mapped[App] = relationship(back_populates="builds")


class Token(Base):
    """A platform token; only its SHA-256 digest is kept."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(40))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    scope: Mapped[str] = mapped_column(String(20), default="admin")
    # JSON list of app names a deploy or read token is for; "[]" for admin tokens.
    apps: Mapped[str] = mapped_column(Text, default="[]")
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class Addon(Base):
    """An add-on attached to an app: its kind, its name, and what its provider keeps of it."""

    __tablename__ = "addons"
    __table_args__ = (UniqueConstraint("app_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(60))
    # JSON the provider needs to deprovision (e.g. the database and role it made).
    state: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # "provisioning" while a deploy or addons:create is making it (a control plane that stops
    # then leaves it to be undone at the next start), "attached" once its release exists.
    status: Mapped[str] = mapped_column(String(20), default="attached")
    build_id: Mapped[int | None] = mapped_column(default=None)


class ApiKey(Base):
    """A key that may call an app's URL; only its SHA-256 digest is kept."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(40))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    rate_per_s: Mapped[float | None] = mapped_column(Float(), default=None)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # Use, counted by the replicas and moved here from their log lines (kiln keys).
    requests: Mapped[int] = mapped_column(default=0)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
