"""The add-on provider interface, and the registry of providers."""

from __future__ import annotations

__all__ = ["AddonProvider", "Provisioned", "provider_for"]

from dataclasses import dataclass, field
from typing import Any, Protocol

from kiln.errors import InvalidInput
from kiln.manifest import AddonKind
from kiln.settings import Settings


@dataclass(frozen=True)
class Provisioned:
    config_vars: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)  # what deprovision needs later


class AddonProvider(Protocol):
    kind: AddonKind

    def planned_state(self, app: str, name: str) -> dict[str, Any]:
        """What ``deprovision`` needs, known before ``provision`` makes anything: a deploy
        journals it first, so a stop half-way can be undone."""
        ...

    def provision(self, app: str, name: str) -> Provisioned: ...
    def deprovision(self, app: str, state: dict[str, Any]) -> None: ...
    def status(self, state: dict[str, Any]) -> str: ...


def provider_for(kind: str, settings: Settings) -> AddonProvider:
    try:
        chosen = AddonKind(kind)
    except ValueError:
        raise InvalidInput(
            f"unknown add-on {kind!r}; available: {', '.join(k.value for k in AddonKind)}",
            code="unknown_addon",
        ) from None
    if chosen is AddonKind.API_KEYS:
        from kiln.addons.api_keys import ApiKeysProvider

        return ApiKeysProvider()
    from kiln.addons.vector_store import VectorStoreProvider

    return VectorStoreProvider(settings)
