"""The ``api-keys`` add-on: with it, every request to the app's URL needs one of its keys.

Nothing is provisioned outside the store; enforcement happens in the replicas
(``kiln.route.keys``). The CLI's mini-languages for keys live here: ``30d``, ``10/s``.
"""

from __future__ import annotations

__all__ = ["ApiKeysProvider", "parse_duration", "parse_rate"]

import re
from typing import Any

from kiln.addons.base import Provisioned
from kiln.errors import InvalidInput
from kiln.manifest import AddonKind

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_RATE = re.compile(r"(\d+(?:\.\d+)?)/([smhd])")


class ApiKeysProvider:
    kind = AddonKind.API_KEYS

    def planned_state(self, app: str, name: str) -> dict[str, Any]:
        return {}

    def provision(self, app: str, name: str) -> Provisioned:
        return Provisioned()

    def deprovision(self, app: str, state: dict[str, Any]) -> None:
        return None

    def status(self, state: dict[str, Any]) -> str:
        return "enforced on every replica"


def parse_duration(text: str) -> float:
    """``"30d"`` -> seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise InvalidInput(
            f"got {text!r} for --expires; it must be a duration like 90m, 12h or 30d",
            code="bad_duration",
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_rate(text: str) -> float:
    """``"10/s"`` -> requests per second."""
    match = _RATE.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise InvalidInput(
            f"got {text!r} for --rate; it must be requests per unit like 10/s, 600/m or 5000/h",
            code="bad_rate",
        )
    return float(match.group(1)) / _UNITS[match.group(2)]
