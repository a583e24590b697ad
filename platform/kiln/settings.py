"""Platform settings, read from ``KILN_*`` environment variables; built once, passed explicitly.

>>> Settings(home=Path("/tmp/k")).resolved_database_url
'sqlite:////tmp/k/kiln.db'
"""

from __future__ import annotations

__all__ = ["Settings", "default_home"]

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    return Path.home() / ".kiln"


class Settings(BaseSettings):
    """How this control plane runs: where its state lives and where it listens."""

    model_config = SettingsConfigDict(env_prefix="KILN_", extra="ignore")

    home: Path = Field(
        default_factory=default_home,
        description="Directory holding the platform's state: database, secret key, logs, caches.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the store, e.g. postgresql+psycopg://user:pw@host/kiln; "
        "default: a SQLite file in KILN_HOME.",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Fernet key(s) encrypting config vars at rest, comma-separated, newest first; "
        "default: KILN_HOME/secret.key, created on first start.",
    )
    api_host: str = Field("127.0.0.1", description="Interface the control-plane API binds.")
    api_port: int = Field(7100, ge=1, le=65535, description="Port of the control-plane API.")

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'kiln.db'}"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"
