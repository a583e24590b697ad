"""The ``api-keys`` add-on: with it, every request to the app's URL needs one of its keys.

Nothing is provisioned outside the store; enforcement happens in the replicas
(``kiln.route.keys``). Their mini-languages (``30d``, ``10/s``) are in ``kiln.manifest.units``.
"""

from __future__ import annotations

__all__ = ["ApiKeysProvider"]

from typing import Any

from kiln.addons.base import Provisioned
from kiln.manifest import AddonKind


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
