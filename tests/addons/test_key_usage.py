"""API keys' use moves from the replicas' log lines into the store, each line once."""

import json
import time

from kiln.addons.api_keys import UsageLedger
from kiln.models import LogRecord, LogSource
from kiln.release.releaser import Releaser
from kiln.run.logs import append_records
from kiln.settings import Settings
from kiln.store import Store


def usage(ts: float, counts: dict[int, list[float]]) -> LogRecord:
    return LogRecord(ts=ts, source=LogSource.USAGE, process="dyno.a", line=json.dumps(counts))


def test_use_is_counted_once_and_only_when_settled(settings: Settings) -> None:
    store = Store.open(settings)
    store.create_app("paid", actor="t")
    Releaser(store, settings).attach_addon("paid", "api-keys", None, "t")
    key = store.keys.create("paid", "ci", None, None)
    now = time.time()
    append_records(settings.log_dir, "paid", [usage(now - 30, {key.id: [3, now - 31]}),
                                              usage(now - 20, {key.id: [2, now - 21]})])  # fmt: skip
    ledger = UsageLedger(store, settings, settle_s=5)
    ledger.ingest(now)
    ledger.ingest(now)  # again: nothing new
    [counted] = store.keys.all("paid")
    assert counted.requests == 5 and counted.last_used_at is not None
    append_records(settings.log_dir, "paid", [usage(now - 1, {key.id: [4, now - 1]})])
    ledger.ingest(now)  # too fresh: a replica's batch may still be on its way
    assert store.keys.all("paid")[0].requests == 5
    ledger.ingest(now + 10)
    assert store.keys.all("paid")[0].requests == 9
