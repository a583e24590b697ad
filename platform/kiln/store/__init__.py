"""Durable state: SQLite (embedded default) or PostgreSQL, migrated by alembic, secrets encrypted."""

from kiln.store.crypto import Vault, load_vault
from kiln.store.store import Store

__all__ = ["Store", "Vault", "load_vault"]
