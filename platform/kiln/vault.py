"""Encryption at rest for config vars: Fernet keys from ``KILN_SECRET_KEY`` or a 0600 key file.

Several keys (comma-separated, newest first) allow rotation: new values are encrypted with the
first, and values written under any of them still decrypt (cryptography's ``MultiFernet``).
"""

from __future__ import annotations

__all__ = ["Vault", "load_vault"]

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from kiln.errors import KilnError

if TYPE_CHECKING:  # a replica's worker imports this module at each cold start: not the settings
    from kiln.settings import Settings

KEY_FILE = "secret.key"


class Vault:
    """Encrypts and decrypts small JSON documents (an app's config vars)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise KilnError("no encryption key given", code="no_secret_key")
        self.key_material = ",".join(key.decode() for key in keys)
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError:
            raise KilnError(
                "KILN_SECRET_KEY is not a valid Fernet key: it must be 32 url-safe base64-encoded "
                "bytes (make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')",
                code="bad_secret_key",
            ) from None

    def seal(self, document: dict[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(document, sort_keys=True).encode()).decode()

    def open(self, token: str) -> dict[str, str]:
        try:
            data: dict[str, str] = json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise KilnError(
                "stored config vars cannot be decrypted with the current secret key; was "
                "KILN_SECRET_KEY or KILN_HOME/secret.key changed? Add the old key after the new "
                "one in KILN_SECRET_KEY (comma-separated) to rotate keys.",
                code="secret_key_mismatch",
            ) from None
        return data


def load_vault(settings: Settings) -> Vault:
    """The vault for these settings, creating ``KILN_HOME/secret.key`` (mode 0600) on first use."""
    if settings.secret_key is not None:
        keys = [k.strip().encode() for k in settings.secret_key.get_secret_value().split(",")]
        return Vault([k for k in keys if k])
    path = settings.home / KEY_FILE
    if not path.exists():
        _create_key_file(path)
    return Vault([path.read_bytes().strip()])


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return
    with os.fdopen(fd, "wb") as file:
        file.write(Fernet.generate_key())
