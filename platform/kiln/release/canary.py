"""Canary rollouts: a new release on a share of an app's replicas, judged against the release
before it, then promoted (it rolls out to every replica) or aborted (every replica goes back).

The judgement is a pure function of the two releases' request figures (``judge``); the figures
come from the router lines each replica logs with the release its dyno runs (``figures``); the
``CanaryWatcher`` applies the judgement to every app in a canary, every few seconds, when
``[rollout] auto`` is set, and aborts at once a canary whose dyno would not start.

    decision = judge(stable, canary, elapsed_s=600, rollout=manifest.rollout)
    decision.action, decision.reason    # "promote", "after 10m: 0.0% 5xx (v2: 0.1%), p95 ..."
"""

from __future__ import annotations

__all__ = ["CanaryWatcher", "Decision", "Figures", "canary_info", "figures", "judge"]

import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kiln.errors import NotFound
from kiln.manifest import Manifest, Rollout
from kiln.models import CanaryFigures, CanaryInfo, CanaryPart, LogRecord, LogSource
from kiln.proc import Every
from kiln.route.figures import parse, percentile
from kiln.run.logs import records_since
from kiln.settings import Settings
from kiln.store import Store

if TYPE_CHECKING:
    from kiln.release.releaser import Releaser


_P95_SLACK_MS = 50.0


@dataclass(frozen=True)
class Figures:
    """One release's requests since the canary started."""

    requests: int = 0
    errors: int = 0  # answers of 500 and above
    p95_ms: float | None = None

    @property
    def error_rate(self) -> float:
        """Percent of requests that got a 5xx."""
        return 100.0 * self.errors / self.requests if self.requests else 0.0

    def describe(self) -> str:
        p95 = f"{self.p95_ms:.0f} ms" if self.p95_ms is not None else "-"
        return f"{self.requests} requests, {self.error_rate:.1f}% 5xx, p95 {p95}"


class Action(enum.StrEnum):
    WAIT = "wait"
    PROMOTE = "promote"
    ABORT = "abort"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def figures(records: Iterable[LogRecord], release: int) -> Figures:
    """``release``'s figures from router lines (``GET /path 200 12.3ms``)."""
    latencies: list[float] = []
    errors = 0
    for record in records:
        answer = parse(record) if record.release == release else None
        if answer is not None:
            latencies.append(answer.ms)
            errors += answer.status >= 500
    if not latencies:
        return Figures()
    return Figures(len(latencies), errors, percentile(sorted(latencies), 95))


def judge(
    stable: Figures, canary: Figures, *, elapsed_s: float, rollout: Rollout,
    failed: str | None = None,
) -> Decision:  # fmt: skip
    """What to do with a canary now. Abort at once when its dyno failed, or once it has served
    ``min_requests`` and its 5xx rate or p95 left the bounds set by the release before it;
    promote when ``auto`` has passed within them; else wait."""
    if failed is not None:
        return Decision(Action.ABORT, f"its dyno failed: {failed}")
    if canary.requests >= rollout.min_requests:
        allowed = stable.error_rate + rollout.max_error_increase
        if canary.error_rate > allowed:
            return Decision(
                Action.ABORT,
                f"{canary.error_rate:.1f}% of its answers were 5xx, over the {allowed:.1f}% "
                f"allowed (the previous release: {stable.describe()})",
            )
        if canary.p95_ms is not None and stable.p95_ms is not None and stable.requests:
            bound = stable.p95_ms * rollout.max_p95_ratio + _P95_SLACK_MS
            if canary.p95_ms > bound:
                return Decision(
                    Action.ABORT,
                    f"its p95 latency of {canary.p95_ms:.0f} ms is over the {bound:.0f} ms "
                    f"allowed (the previous release: {stable.describe()})",
                )
    if rollout.auto is not None and elapsed_s >= rollout.auto:
        evidence = (
            f"{canary.describe()}; the previous release: {stable.describe()}"
            if canary.requests
            else "it served no requests meanwhile"
        )
        return Decision(Action.PROMOTE, f"within bounds for {_duration(rollout.auto)}: {evidence}")
    return Decision(Action.WAIT, "being judged")


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def canary_failure(records: Iterable[LogRecord], release: int) -> str | None:
    """What a replica said when the canary's dyno would not start or keep running."""
    marker = f"canary v{release} failed: "
    for record in records:
        if record.source is LogSource.RELEASE and record.line.startswith(marker):
            return record.line[len(marker) :].splitlines()[0]
    return None


class CanaryWatcher:
    """Judges every app in a canary every ``interval_s``, promoting or aborting through the
    releaser (which records it and wakes the reconciler)."""

    def __init__(self, releaser: Releaser, settings: Settings, interval_s: float = 2.0) -> None:
        self.releaser = releaser
        self.settings = settings
        self.interval_s = interval_s
        self._every = Every("kiln-canaries", interval_s, self.check, "judging canaries failed")

    def start(self) -> None:
        self._every.start()

    def stop(self) -> None:
        self._every.stop()

    def check(self) -> None:
        for item in self.releaser.store.deployables():
            canary = item.canary
            if canary is None or canary.started_at is None:
                continue
            decision = self.decide(item.app, item.release, canary)
            if decision.action is not Action.WAIT:
                self.releaser.end_canary(
                    item.app, promote=decision.action is Action.PROMOTE, reason=decision.reason,
                    actor="kiln (rollout.auto)",
                )  # fmt: skip

    def decide(self, app: str, stable: int, canary: CanaryPart) -> Decision:
        """The judgement, where ``[rollout] auto`` asks for one; without it only a canary whose
        dyno failed is aborted (it serves nothing), and the rest waits for a person."""
        assert canary.started_at is not None
        started = canary.started_at.timestamp()
        records = records_since(self.settings.log_dir, app, started)
        manifest = Manifest.model_validate_json(canary.manifest) if canary.manifest else Manifest()
        failed = canary_failure(records, canary.release)
        if manifest.rollout.auto is None:
            return judge(Figures(), Figures(), elapsed_s=0, rollout=manifest.rollout, failed=failed)
        return judge(
            figures(records, stable), figures(records, canary.release),
            elapsed_s=time.time() - started, rollout=manifest.rollout, failed=failed,
        )  # fmt: skip


def canary_info(store: Store, settings: Settings, app: str) -> CanaryInfo:
    """The app's canary and the release before it, with their figures and the judgement."""
    store.get_app(app)
    item = next((d for d in store.deployables() if d.app == app), None)
    if item is None or item.canary is None:
        raise NotFound(
            f"{app} runs no canary; kiln deploy --canary 25 starts one", code="no_canary"
        )
    canary = item.canary
    manifest = Manifest.model_validate_json(canary.manifest) if canary.manifest else Manifest()
    started = canary.started_at.timestamp() if canary.started_at else time.time()
    records = records_since(settings.log_dir, app, started) if canary.started_at else []
    stable_figures, canary_figures = (
        figures(records, item.release),
        figures(records, canary.release),
    )
    judgement = "its dynos are starting"
    if canary.started_at is not None:
        decision = judge(stable_figures, canary_figures, elapsed_s=time.time() - started,
                         rollout=manifest.rollout, failed=canary_failure(records, canary.release))  # fmt: skip
        judgement = decision.reason if decision.action is not Action.WAIT else (
            f"within bounds so far; promoted by itself at {_duration(manifest.rollout.auto)}"
            if manifest.rollout.auto is not None
            else "waiting for kiln canary:promote or canary:abort"
        )  # fmt: skip
    return CanaryInfo(
        app=app, share=canary.share, status=canary.status, started_at=canary.started_at,
        stable=_wire(item.release, stable_figures), canary=_wire(canary.release, canary_figures),
        auto_s=manifest.rollout.auto, judgement=judgement,
    )  # fmt: skip


def _wire(release: int, found: Figures) -> CanaryFigures:
    return CanaryFigures(release=release, requests=found.requests, errors=found.errors,
                         error_rate=round(found.error_rate, 2), p95_ms=found.p95_ms)  # fmt: skip
