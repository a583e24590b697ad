"""The ``api-keys`` add-on: with it, every request to the app's URL needs one of its keys.

Nothing is provisioned outside the store; enforcement happens in the replicas
(``kiln.route.keys``). Their mini-languages (``30d``, ``10/s``) are in ``kiln.manifest.units``.
"""

from __future__ import annotations

__all__ = ["ApiKeysProvider", "UsageLedger"]

import json
import time
from typing import Any

from kiln.addons.base import Provisioned
from kiln.manifest import AddonKind
from kiln.models import LogSource
from kiln.proc import Every
from kiln.run.logs import records_since
from kiln.settings import Settings
from kiln.store import Store


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


class UsageLedger:
    """Moves API keys' use from the replicas' log lines into the store every few seconds, so
    ``kiln keys`` reads counts, not logs (which rotate). Lines are taken only once they are
    ``settle_s`` old: replicas ship them in batches, a little late."""

    def __init__(
        self, store: Store, settings: Settings, interval_s: float = 5.0, settle_s: float = 5.0
    ) -> None:
        self.store = store
        self.settings = settings
        self.interval_s = interval_s
        self.settle_s = settle_s
        self._every = Every(
            "kiln-key-usage", interval_s, self.ingest, "counting API keys' use failed"
        )

    def start(self) -> None:
        self._every.start()

    def stop(self) -> None:
        self._every.stop()

    def ingest(self, now: float | None = None) -> None:
        upto = (time.time() if now is None else now) - self.settle_s
        for app in self.store.list_apps():
            if not self.store.addons.has_kind(app.name, AddonKind.API_KEYS.value):
                continue
            since = self.store.keys.usage_through(app.name)
            counts: dict[int, tuple[int, float]] = {}
            for record in records_since(self.settings.log_dir, app.name, since):
                if record.source is not LogSource.USAGE or not since < record.ts <= upto:
                    continue
                for key, (count, last) in json.loads(record.line).items():
                    seen, latest = counts.get(int(key), (0, 0.0))
                    counts[int(key)] = (seen + count, max(latest, last))
            if counts or since < upto:
                self.store.keys.add_usage(app.name, counts, upto)
