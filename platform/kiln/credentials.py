"""Where the CLI finds the API and its token: ``KILN_API_URL``/``KILN_TOKEN``, else the file
``kiln up`` wrote (``$KILN_HOME/credentials.json``, mode 0600)."""

from __future__ import annotations

__all__ = [
    "Credentials",
    "credentials_path",
    "home_dir",
    "read_credentials",
    "read_credentials_file",
    "write_credentials",
]

import json
import os
from pathlib import Path

from pydantic import BaseModel, ValidationError

from kiln.errors import KilnError
from kiln.settings import default_home

DEFAULT_API_URL = "http://127.0.0.1:7100"


class Credentials(BaseModel):
    api_url: str = DEFAULT_API_URL
    token: str | None = None


def home_dir() -> Path:
    return Path(os.environ["KILN_HOME"]) if os.environ.get("KILN_HOME") else default_home()


def credentials_path(home: Path | None = None) -> Path:
    return (home or home_dir()) / "credentials.json"


def read_credentials_file(home: Path | None = None) -> Credentials:
    """What ``kiln up`` stored, ignoring the environment."""
    path = credentials_path(home)
    if not path.exists():
        return Credentials()
    try:
        return Credentials.model_validate_json(path.read_text())
    except (ValidationError, OSError) as exc:
        raise KilnError(
            f"{path} is unreadable ({type(exc).__name__}); delete it and run kiln up, or set "
            "KILN_API_URL and KILN_TOKEN",
            code="bad_credentials_file",
        ) from None


def read_credentials(home: Path | None = None) -> Credentials:
    """The stored credentials, overridden field by field by ``KILN_API_URL`` and ``KILN_TOKEN``."""
    stored = read_credentials_file(home)
    return Credentials(
        api_url=os.environ.get("KILN_API_URL") or stored.api_url,
        token=os.environ.get("KILN_TOKEN") or stored.token,
    )


def write_credentials(credentials: Credentials, home: Path | None = None) -> Path:
    """Store credentials for the local CLI; the file is created with mode 0600 before writing."""
    path = credentials_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file may have had looser permissions
    with os.fdopen(fd, "w") as file:
        file.write(json.dumps(credentials.model_dump(), indent=2))
    return path
