"""The one place that decides what an app name and a config var name may be.

>>> app_name("chat-v2")
'chat-v2'
>>> config_key("HF_TOKEN")
'HF_TOKEN'
"""

from __future__ import annotations

__all__ = ["APP_NAME_RULE", "RESERVED_CONFIG_KEYS", "app_name", "config_key"]

import re

from kiln.errors import InvalidInput

_APP_NAME = re.compile(r"[a-z][a-z0-9-]{1,28}[a-z0-9]")
APP_NAME_RULE = (
    "3-30 characters: lowercase letters, digits and dashes, starting with a letter and not "
    "ending with a dash"
)

_CONFIG_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Set by the platform in every dyno; a user value would be overwritten or break routing.
RESERVED_CONFIG_KEYS = frozenset({"PORT"})


def app_name(name: str) -> str:
    """Return ``name`` if it is a valid app name, else raise ``InvalidInput`` saying why."""
    if not isinstance(name, str) or not _APP_NAME.fullmatch(name):
        shown = name if isinstance(name, str) and len(name) <= 40 else f"{str(name)[:40]}..."
        raise InvalidInput(
            f"invalid app name {shown!r}: an app name is {APP_NAME_RULE} (e.g. 'chat' or 'llm-7b')",
            code="invalid_app_name",
        )
    return name


def config_key(key: str) -> str:
    """Return ``key`` if it can be an environment variable name a user may set, else raise."""
    if not isinstance(key, str) or not _CONFIG_KEY.fullmatch(key):
        raise InvalidInput(
            f"invalid config var name {key!r}: it must be an environment variable name "
            "(letters, digits and underscores, not starting with a digit), e.g. HF_TOKEN",
            code="invalid_config_key",
        )
    if key in RESERVED_CONFIG_KEYS:
        raise InvalidInput(
            f"config var {key} is set by the platform in every dyno and cannot be changed",
            code="reserved_config_key",
        )
    return key
