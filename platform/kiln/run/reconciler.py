"""The reconciler: makes Ray Serve run what the store says, and records what happened.

Each pass: desired state (every app's newest release that has not failed, and its formation) ->
Serve config (a pure function) -> applied when it differs from what was last applied or when Serve
lost apps (Ray restarted). Then each pending release is judged from Serve's status: running ->
succeeded; failed to deploy -> failed, with the dyno's last lines; the app then falls back to its
previous release, which Serve kept serving all along.
"""

from __future__ import annotations

__all__ = ["Reconciler"]

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kiln.builds.registry import registry_access
from kiln.errors import KilnError
from kiln.gpu.capacity import NodeResources, choose_gpu, with_gpu_memory
from kiln.manifest import AddonKind, GpuSpec, Manifest, Resources
from kiln.models import (
    Deployment,
    Formation,
    KeyRule,
    LogRecord,
    LogSource,
    NodeInventory,
    ReleaseStatus,
)
from kiln.run.logs import append_records
from kiln.run.serve_api import AppState, ServeBackend, ServeRefused, failure_reason
from kiln.run.serve_config import (
    FRONT,
    NO_RELEASE,
    REFUSED,
    STARTING,
    STOPPED,
    Deployable,
    application_config,
    assemble,
    canary_period,
    front_config,
    serve_refusal,
)
from kiln.sandbox import Sandbox, sandbox_for
from kiln.settings import Settings
from kiln.store import Store

logger = logging.getLogger(__name__)

# What the reconciler prints while the platform comes back; kiln up (detached) waits for them.
BRINGING_BACK = "-----> Bringing back"
EVERY_APP_SERVES = "-----> Every app serves again"
NOT_EVERY_APP_SERVES = "-----> Not every app serves:"
_SETTLED = {"RUNNING", "DEPLOY_FAILED", "UNHEALTHY"}


def deployable(
    item: Deployment, keys: list[KeyRule] | None = None, sandbox: Sandbox | None = None
) -> Deployable:
    manifest = Manifest.model_validate_json(item.manifest) if item.manifest else Manifest()
    formation = Formation.model_validate_json(item.formation) if item.formation else None
    rules = None if keys is None else tuple(sorted(keys, key=lambda k: k.id))
    canary = None
    if item.canary is not None:
        part = item.canary
        canary = Deployable(
            item.app, part.release, part.artifact, part.config_sealed,
            Manifest.model_validate_json(part.manifest) if part.manifest else Manifest(),
            formation, rules, sandbox=sandbox,
        )  # fmt: skip
    return Deployable(
        item.app, item.release, item.artifact, item.config_sealed, manifest, formation, rules,
        sandbox=sandbox, canary=canary, canary_share=item.canary.share if item.canary else 0,
    )  # fmt: skip


def _resources(item: Deployment) -> Resources:
    """The release's resources; the defaults for a manifest that no longer parses (the pass
    that builds its Serve config fails that release alone)."""
    try:
        return deployable(item).manifest.resources
    except ValueError:
        return Resources()


class Reconciler:
    def __init__(
        self,
        store: Store,
        backend: ServeBackend,
        settings: Settings,
        interval_s: float = 1.0,
        nodes: Callable[[], list[NodeResources]] | None = None,
        inventory: Callable[[], list[NodeInventory]] | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.nodes = nodes  # the cluster's GPUs, for the capacity check; None: no check
        self.inventory = inventory  # NVML on every node, for gpu_memory; None: counts only
        self._gpu_memory: dict[str, int | None] = {}  # node id -> smallest GPU's bytes
        self.settings = settings
        access = registry_access(settings)
        self._registry = access.address if access is not None else None  # nodes pull from it
        self.interval_s = interval_s
        self.applied: dict[str, Any] | None = None
        # Per app: the Serve application Serve last accepted, and the verdict on each entry
        # seen (its JSON, and why Serve refuses it, or None).
        self._good: dict[str, dict[str, Any]] = {}
        self._verdicts: dict[str, tuple[str, str | None]] = {}
        self._rejected: set[str] = set()
        self._stopped: set[str] = set()  # apps whose formation is zero replicas (last pass)
        self.last_status: dict[str, AppState] = {}  # Kiln's apps only, not the front
        self._front: dict[str, str] = {}  # app -> its state, as the front tells it
        self._coming_back: set[str] = set()  # apps not yet serving again since start()
        self._back_since = 0.0
        self.waiting: dict[str, str] = {}  # app -> why its replicas wait for a node
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the loop ------------------------------------------------------------------------------

    def start(self) -> None:
        self.announce()
        self._thread = threading.Thread(target=self._run, name="kiln-reconciler", daemon=True)
        self._thread.start()

    def announce(self) -> None:
        """Say which apps are being brought back (the platform starting): kiln up waits for the
        line that says they serve again (kiln.control.process), so this comes before the API
        answers."""
        self._coming_back = {item.app for item in self.store.deployables()}
        self._back_since = time.monotonic()
        if self._coming_back:
            names = ", ".join(sorted(self._coming_back))
            print(f"{BRINGING_BACK} {len(self._coming_back)} app(s): {names}", flush=True)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def poke(self) -> None:
        """Reconcile now rather than at the next tick (after a release or a scale)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
                self.last_error = None
            except KilnError as exc:
                if exc.message != self.last_error:
                    logger.warning("reconcile: %s", exc.message)
                self.last_error = exc.message
            except Exception:
                logger.exception("reconcile failed")
            self._wake.wait(self.interval_s)
            self._wake.clear()

    # -- one pass ------------------------------------------------------------------------------

    def reconcile(self) -> None:
        for _attempt in range(5):  # a release failed here falls back to the one before it
            items = self._placeable(self.store.deployables())
            entries, failed = self._entries(items)
            if not failed:
                break
        self._front = self._states(entries, items)
        desired = self._assemble(entries)
        status = self.backend.status()
        if desired != self.applied or not set(entries) <= set(status):
            try:
                self.backend.apply(desired)
                self._good = entries
            except ServeRefused as exc:
                logger.warning("Serve refused the config; applying app by app: %s", exc.message)
                self._apply_each(entries, items)
            self.applied = desired
            status = self.backend.status()
        self.last_status = {app: state for app, state in status.items() if app != FRONT}
        self._report_back(entries)
        for item in items:
            if item.status is ReleaseStatus.PENDING and item.app not in self._rejected:
                self._judge(item, status.get(item.app), item.app in entries)
            if item.canary is not None and item.canary.status is ReleaseStatus.PENDING:
                self._judge_canary(item, status.get(item.app))

    def _report_back(self, entries: dict[str, dict[str, Any]]) -> None:
        """Once every app being brought back serves (or has failed to), say so, once."""
        if not self._coming_back:
            return
        # Apps scaled to 0 are not brought back; one waiting for a node the autoscaler was asked
        # for is settled for now (kiln ps says so).
        states = {
            app: self.last_status.get(app) for app in self._coming_back
            if self._front.get(app) != STOPPED
        }  # fmt: skip
        waiting = [
            app for app, state in states.items()
            if app in entries and app not in self.waiting
            and (state is None or state.status not in _SETTLED)
        ]  # fmt: skip
        if waiting:
            return
        took = time.monotonic() - self._back_since
        serving = sorted(a for a, s in states.items() if s is not None and s.status == "RUNNING")
        others = sorted(set(states) - set(serving))
        if not states:
            print(f"{EVERY_APP_SERVES} (none runs replicas: each is scaled to 0)", flush=True)
        elif not others:
            print(f"{EVERY_APP_SERVES} ({len(serving)}, {took:.1f}s after the start)", flush=True)
        else:
            why = ", ".join(f"{app} ({self._why_not(app, states[app])})" for app in others)
            print(f"{NOT_EVERY_APP_SERVES} {len(serving)} of {len(states)} apps serve again "
                  f"({took:.1f}s after the start); not: {why}", flush=True)  # fmt: skip
        self._coming_back = set()

    def _why_not(self, app: str, state: AppState | None) -> str:
        if app in self.waiting:
            return "waits for a node"
        return state.status if state is not None else "not running"

    def _entries(self, items: list[Deployment]) -> tuple[dict[str, dict[str, Any]], bool]:
        """Each app's Serve application, checked alone against Serve's schema. A pending release
        Serve would refuse fails (True: compute again, with its app's previous release); a
        running app whose config Serve would now refuse keeps the config it runs."""
        entries: dict[str, dict[str, Any]] = {}
        self._rejected = set()
        self._stopped = set()
        for item in items:
            problem: str | None
            try:
                box = sandbox_for(self.settings, item.app, item.sandbox_id)
                item_deployable = deployable(item, self._keys(item.app), box)
                if item_deployable.canary is not None and (
                    item_deployable.canary.manifest.resources != item_deployable.manifest.resources
                ):
                    # A canary runs in the replicas of the release before it; other resources
                    # need replicas of their own: it rolls out to every replica instead.
                    reason = (f"its [resources] differ from v{item.release}'s, so it cannot share "
                              "their replicas; it rolls out to every replica instead")  # fmt: skip
                    self.store.end_canary(item.app, promote=True, reason=reason)
                    self._log(item.app, f"v{item_deployable.canary.release}: {reason}")
                    return entries, True
                entry = application_config(
                    item_deployable.with_gpu(self._gpu_choice.get(item.app)),
                    log_dir=str(self.settings.log_dir),
                    model_cache=str(self.settings.home / "models"),
                    docker_host=self.settings.resolved_docker_host,
                    registry=self._registry,
                )
            except ValueError as exc:  # a stored manifest this version no longer accepts
                entry = None
                problem = f"its kiln.toml is not valid any more: {exc}".replace("\n", " ")
            else:
                if entry is None:  # zero replicas: nothing to run
                    self._stopped.add(item.app)
                    continue
                problem = self._problem(item.app, entry)
            if problem is None:
                assert entry is not None
                entries[item.app] = entry
            elif item.status is ReleaseStatus.PENDING:
                self._refuse(item, problem)
                return entries, True
            else:
                self._rejected.add(item.app)
                if item.app in self._good:
                    entries[item.app] = self._good[item.app]
        return entries, False

    def _problem(self, app: str, entry: dict[str, Any]) -> str | None:
        """Why Serve would refuse (or refused) this app's entry; checked once per distinct entry."""
        key = json.dumps(entry, sort_keys=True)
        known = self._verdicts.get(app)
        if known is None or known[0] != key:
            known = self._verdicts[app] = (key, serve_refusal(entry))
        return known[1]

    def _states(
        self, entries: dict[str, dict[str, Any]], items: list[Deployment]
    ) -> dict[str, str]:
        """Every app's state, for the front to answer requests its route does not take yet."""
        states = dict.fromkeys((app.name for app in self.store.list_apps()), NO_RELEASE)
        for item in items:
            states[item.app] = (
                STARTING if item.app in entries else STOPPED if item.app in self._stopped
                else REFUSED
            )  # fmt: skip
        return states

    def _assemble(self, entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return assemble(
            entries.values(), http_host=self.settings.http_host, http_port=self.settings.http_port,
            front=front_config(self._front),
        )  # fmt: skip

    def _apply_each(self, entries: dict[str, dict[str, Any]], items: list[Deployment]) -> None:
        """Serve refused the whole config: start from what it last accepted, then add each
        changed app alone, so the one it refuses is found and the others go ahead."""
        accepted = {app: e for app, e in self._good.items() if app in entries}
        self.backend.apply(self._assemble(accepted))  # refused too: Serve's own trouble, raise
        by_app = {item.app: item for item in items}
        for app, entry in entries.items():
            if accepted.get(app) == entry:
                continue
            trial = {**accepted, app: entry}
            try:
                self.backend.apply(self._assemble(trial))
            except ServeRefused as exc:
                self._verdicts[app] = (json.dumps(entry, sort_keys=True), exc.message)
                item = by_app[app]
                if item.status is ReleaseStatus.PENDING:
                    self._refuse(item, exc.message)
                self._rejected.add(app)
                continue
            accepted = trial
        self._good = accepted

    def _refuse(self, item: Deployment, problem: str) -> None:
        reason = f"Ray Serve refuses its config: {problem}"
        self._settle(item, ReleaseStatus.FAILED, reason, f"v{item.release} failed: {reason}")

    def _placeable(self, items: list[Deployment]) -> list[Deployment]:
        """Fail pending releases whose GPU needs no node can ever meet (their app falls back to
        its previous release); remember which GPU preference the others get."""
        self._gpu_choice: dict[str, GpuSpec] = {}
        needs = [(item, _resources(item)) for item in items]
        if self.nodes is None or not any(resources.gpu for _item, resources in needs):
            return items
        try:
            nodes = self.nodes()
            if any(r.gpu and r.gpu_memory for _item, r in needs):
                nodes = self._with_gpu_memory(nodes)
        except KilnError as exc:  # no node list this pass: place nothing new, judge nothing
            logger.warning("capacity check skipped: %s", exc.message)
            return items
        kept = []
        for item, resources in needs:
            chosen, reason = choose_gpu(resources.gpu, nodes, resources.gpu_memory)
            if reason is not None and self.settings.cluster_autoscales:
                # No node can hold it yet: Serve's pending replica is the demand Ray's
                # autoscaler answers with a node. The first preference is what it asks for.
                self.waiting[item.app] = (
                    f"no node can hold a replica yet ({reason}); Ray's autoscaler was asked "
                    "for a node that can"
                )
                self._gpu_choice[item.app] = resources.gpu[0]
                kept.append(item)
                continue
            self.waiting.pop(item.app, None)
            if reason is not None and item.status is ReleaseStatus.PENDING:
                self._settle(
                    item,
                    ReleaseStatus.FAILED,
                    f"cannot be placed: {reason}",
                    f"v{item.release} failed: cannot be placed: {reason}",
                )
                continue
            if chosen is not None:
                self._gpu_choice[item.app] = chosen
            kept.append(item)
        if len(kept) != len(items):
            return self._placeable(self.store.deployables())  # the fallbacks, checked in turn
        return kept

    def _with_gpu_memory(self, nodes: list[NodeResources]) -> list[NodeResources]:
        """Nodes with their smallest GPU's memory. A GPU's size never changes, so NVML is asked
        (a driver on every node: seconds) only when a GPU node appears that was not asked before;
        a node NVML cannot read keeps None and is counted by GPUs only."""
        if self.inventory is not None and any(
            n.gpus > 0 and n.node_id not in self._gpu_memory for n in nodes
        ):
            inventory = self.inventory()
            for node in with_gpu_memory(nodes, inventory):
                self._gpu_memory[node.node_id] = node.gpu_memory
        return [dataclasses.replace(n, gpu_memory=self._gpu_memory.get(n.node_id)) for n in nodes]

    def _keys(self, app: str) -> list[KeyRule] | None:
        """The app's key rules if it has the api-keys add-on; None if it is public."""
        if not self.store.addons.has_kind(app, AddonKind.API_KEYS.value):
            return None
        return self.store.keys.rules(app)

    def _judge(self, item: Deployment, state: AppState | None, deployed: bool) -> None:
        if not deployed:  # scaled to zero replicas: nothing to judge, nothing running
            self._settle(item, ReleaseStatus.SUCCEEDED, None, "released with 0 replicas")
            return
        if state is None or state.release != item.release:
            return
        if state.status == "RUNNING":
            self._settle(item, ReleaseStatus.SUCCEEDED, None, f"v{item.release} is live")
        elif state.status == "DEPLOY_FAILED":
            reason = failure_reason(state.deployment_message or state.message)
            self._settle(item, ReleaseStatus.FAILED, reason, f"v{item.release} failed: {reason}")
            self.poke()  # fall back to the previous release right away

    def _judge_canary(self, item: Deployment, state: AppState | None) -> None:
        """Serve runs the config with the canary in it: its share of the replicas swap their
        dynos now, and the canary's clock starts (the release stage judges it from here)."""
        assert item.canary is not None
        if state is not None and state.release == item.release and state.status == "RUNNING":
            canary = item.canary
            self.store.canary_started(item.app, canary.release)
            replicas = len(state.replicas)
            runs_on = len(range(0, replicas, canary_period(canary.share)))
            self._log(item.app, f"v{canary.release} is a canary on {runs_on} of {replicas} "
                                f"replica(s) ({canary.share}% asked); v{item.release} serves the rest")  # fmt: skip

    def _log(self, app: str, line: str) -> None:
        append_records(
            self.settings.log_dir, app,
            [LogRecord(ts=time.time(), source=LogSource.RELEASE, process="kiln", line=line)],
        )  # fmt: skip

    def _settle(
        self, item: Deployment, status: ReleaseStatus, reason: str | None, line: str
    ) -> None:
        self.store.set_release_status(item.app, item.release, status, reason)
        self._log(item.app, line)
