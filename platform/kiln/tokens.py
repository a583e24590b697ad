"""Bearer secrets: platform tokens and app API keys, with a recognisable prefix and a checksum.

A secret looks like ``kiln_tok_<30 random base62><6 base62 CRC32>`` (the shape of GitHub's
tokens): a typo or a truncated paste is rejected by ``well_formed`` without a database look-up,
and secret scanners can match the prefix. Only ``digest(secret)`` is ever stored.

>>> token = mint(PLATFORM_TOKEN)
>>> well_formed(token, PLATFORM_TOKEN), well_formed(token[:-1] + "x", PLATFORM_TOKEN)
(True, False)
"""

from __future__ import annotations

__all__ = ["API_KEY", "PLATFORM_TOKEN", "digest", "display_prefix", "mint", "well_formed"]

import hashlib
import secrets
import string
import zlib

PLATFORM_TOKEN = "kiln_tok_"  # noqa: S105 (a prefix, not a secret)
API_KEY = "kiln_key_"

_ALPHABET = string.digits + string.ascii_letters
_BODY = 30
_CHECK = 6


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rest = divmod(number, 62)
        chars.append(_ALPHABET[rest])
    return "".join(reversed(chars))


def _checksum(prefix: str, body: str) -> str:
    return _base62(zlib.crc32(f"{prefix}{body}".encode()), _CHECK)


def mint(prefix: str) -> str:
    """A new random secret of the given kind (``PLATFORM_TOKEN`` or ``API_KEY``)."""
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_BODY))
    return f"{prefix}{body}{_checksum(prefix, body)}"


def well_formed(secret: str, prefix: str) -> bool:
    """True if ``secret`` has the kind's prefix, length, alphabet and a matching checksum."""
    if not secret.startswith(prefix) or len(secret) != len(prefix) + _BODY + _CHECK:
        return False
    rest = secret[len(prefix) :]
    if any(c not in _ALPHABET for c in rest):
        return False
    return secrets.compare_digest(_checksum(prefix, rest[:_BODY]), rest[_BODY:])


def digest(secret: str) -> str:
    """What is stored instead of the secret: its SHA-256 (the secret has 178 random bits)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    """The part of a secret that may be shown in listings to tell secrets apart."""
    return secret[: secret.index("_", 5) + 1 + 6]
