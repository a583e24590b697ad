"""The ``vector-store`` add-on: a PostgreSQL database with pgvector and a role of its own, per
app; its URL is injected as ``KILN_VECTOR_URL`` (or ``<NAME>_URL`` for ``--as NAME``).

The role owns its database and nothing else, and ``CONNECT`` is revoked from everyone else, so
one app's role cannot read another app's data. Provisioning that fails halfway drops what it made.
"""

from __future__ import annotations

__all__ = ["VectorStoreProvider", "config_var_for"]

import re
import secrets
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
from psycopg import sql

from kiln.addons.base import Provisioned
from kiln.addons.postgres import EmbeddedPostgres
from kiln.errors import Unavailable
from kiln.manifest import AddonKind
from kiln.settings import Settings


def config_var_for(name: str) -> str:
    return (
        "KILN_VECTOR_URL"
        if name == AddonKind.VECTOR_STORE.value
        else re.sub(r"\W", "_", name).upper() + "_URL"
    )


class VectorStoreProvider:
    kind = AddonKind.VECTOR_STORE

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _admin_url(self) -> str:
        if self.settings.vector_database_url:
            return self.settings.vector_database_url.replace(
                "postgresql+psycopg://", "postgresql://"
            )
        return EmbeddedPostgres(self.settings).ensure()

    def _connect(self, url: str, database: str | None = None) -> psycopg.Connection[Any]:
        target = url if database is None else _with_database(url, database)
        try:
            return psycopg.connect(target, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise Unavailable(
                f"cannot reach the vector store's PostgreSQL at {_redacted(url)}: {exc}".strip(),
                code="vector_store_unavailable",
            ) from None

    def planned_state(self, app: str, name: str) -> dict[str, Any]:
        """The database and role ``provision`` makes, named before it makes them."""
        ident = _ident(app, name)
        return {"database": ident, "role": ident}

    def provision(self, app: str, name: str) -> Provisioned:
        admin = self._admin_url()
        ident = _ident(app, name)
        password = secrets.token_urlsafe(24)
        made: list[str] = []
        try:
            with self._connect(admin) as conn:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(ident), sql.Literal(password)
                    )
                )
                made.append("role")
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(ident), sql.Identifier(ident)
                    )
                )
                made.append("database")
                conn.execute(
                    sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(ident))
                )
                conn.execute(
                    sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        sql.Identifier(ident), sql.Identifier(ident)
                    )
                )
            with self._connect(admin, ident) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except (psycopg.Error, Unavailable):
            self._drop(admin, ident, made)
            raise
        parts = urlsplit(admin)
        url = (
            f"postgresql://{ident}:{quote(password)}@{parts.hostname}:{parts.port or 5432}/{ident}"
        )
        return Provisioned(
            config_vars={config_var_for(name): url}, state={"database": ident, "role": ident}
        )

    def deprovision(self, app: str, state: dict[str, Any]) -> None:
        ident = state.get("database")
        if ident:
            self._drop(self._admin_url(), ident, ["role", "database"])

    def _drop(self, admin: str, ident: str, made: list[str]) -> None:
        try:
            with self._connect(admin) as conn:
                if "database" in made:
                    conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                        (ident,),
                    )
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(ident))
                    )
                if "role" in made:
                    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ident)))
        except (psycopg.Error, Unavailable):
            pass  # the database is gone with its server; nothing else to undo

    def status(self, state: dict[str, Any]) -> str:
        try:
            with self._connect(self._admin_url()) as conn:
                row = conn.execute(
                    "SELECT pg_size_pretty(pg_database_size(%s))", (state.get("database"),)
                ).fetchone()
        except (psycopg.Error, Unavailable) as exc:
            return f"unreachable: {exc}"
        return f"available, {row[0] if row else '?'} used"


def _ident(app: str, name: str) -> str:
    return re.sub(r"\W", "_", f"kiln_{app}_{name}")[:60]


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path=f"/{database}").geturl()


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(
        netloc=f"{parts.username or ''}:***@{parts.hostname}:{parts.port}"
    ).geturl()
