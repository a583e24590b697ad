"""Attaching an add-on to an app: provision, record, inject config vars (a new release), all or
nothing: provisioning is undone if a later step fails."""

from __future__ import annotations

__all__ = ["attach", "attach_missing"]

from datetime import UTC, datetime

from kiln.addons.base import provider_for
from kiln.errors import KilnError
from kiln.models import AddonInfo
from kiln.settings import Settings
from kiln.store import Store


def attach(
    store: Store, settings: Settings, app: str, kind: str, name: str | None, actor: str
) -> AddonInfo:
    """Provision, record, inject config vars (a release); undo the provisioning if any step fails."""
    provider = provider_for(kind, settings)
    name = name or provider.kind.value
    store.get_app(app)
    provisioned = provider.provision(app, name)
    try:
        store.addons.add(
            app,
            provider.kind.value,
            name,
            {**provisioned.state, "config_vars": sorted(provisioned.config_vars)},
        )
        if provisioned.config_vars:
            try:
                store.update_config(
                    app, dict(provisioned.config_vars), actor=f"{actor} (add-on {name})"
                )
            except KilnError:
                store.addons.remove(app, name)
                raise
    except KilnError:
        provider.deprovision(app, provisioned.state)
        raise
    return AddonInfo(name=name, kind=provider.kind.value, created_at=datetime.now(UTC),
                     config_vars=sorted(provisioned.config_vars), status=provider.status(provisioned.state))  # fmt: skip


def attach_missing(
    store: Store, settings: Settings, app: str, kinds: list[str], actor: str
) -> list[AddonInfo]:
    """Attach the add-ons a manifest lists that the app does not have yet."""
    have = {kind for _name, kind, _created, _state in store.addons.all(app)}
    return [attach(store, settings, app, kind, None, actor) for kind in kinds if kind not in have]
