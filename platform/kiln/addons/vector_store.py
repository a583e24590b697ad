"""The ``vector-store`` add-on: a PostgreSQL database with pgvector, and a role of its own, per
app; its URL is injected as ``KILN_VECTOR_URL``. (Provisioning comes with the vector-store work;
this module holds the provider's place in the registry.)"""

from __future__ import annotations

__all__ = ["VectorStoreProvider"]

from typing import Any

from kiln.addons.base import Provisioned
from kiln.errors import Unavailable
from kiln.manifest import AddonKind
from kiln.settings import Settings


class VectorStoreProvider:
    kind = AddonKind.VECTOR_STORE

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def provision(self, app: str, name: str) -> Provisioned:
        raise Unavailable(
            "the vector-store add-on is not available in this Kiln yet; use api-keys, or give "
            "the app a PostgreSQL URL as a config var",
            code="addon_unavailable",
        )

    def deprovision(self, app: str, state: dict[str, Any]) -> None:
        return None

    def status(self, state: dict[str, Any]) -> str:
        return "unavailable"
