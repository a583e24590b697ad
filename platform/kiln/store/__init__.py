"""Durable state: SQLite (embedded default) or PostgreSQL, migrated by alembic, secrets encrypted."""

from kiln.store.store import Store
from kiln.vault import Vault, load_vault

__all__ = ["Store", "Vault", "load_vault"]
