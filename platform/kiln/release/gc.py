"""What the platform may forget: artifacts (slugs, virtualenvs, images) no kept release runs,
models no kept release serves, leftovers of destroyed apps and of stopped builds. The plan is a
pure reading of the disk against the store; ``sweep`` removes what it lists.

Kept: each app's newest ``KILN_KEEP_RELEASES`` releases that ran something, the one it runs
now and a canary's, everything of an app whose deploy is running, scratch younger than an hour
(a build may be making it), and a model a deploy in progress needs.

    plan = collect(store, settings, engine)            # kiln gc --dry-run prints it
    sweep(plan, engine)                                # kiln gc; after every deploy, per app
"""

from __future__ import annotations

__all__ = ["Garbage", "GarbageKind", "Plan", "collect", "leftovers", "sweep"]

import enum
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kiln.engine import ContainerEngine, local_name
from kiln.manifest import Manifest
from kiln.models import ArtifactKind, BuildStatus
from kiln.release.weights import model_cache
from kiln.sandbox import sandbox_for
from kiln.settings import Settings
from kiln.store import Store
from kiln.store.store import KeptRelease

logger = logging.getLogger(__name__)

FRESH_S = 3600.0  # scratch younger than this may belong to a build in progress


class GarbageKind(enum.StrEnum):
    SLUG = "slug"
    VENV = "venv"
    IMAGE = "image"
    MODEL = "model"
    SANDBOX = "sandbox"  # a destroyed app's directory
    LOG = "log"  # a destroyed app's log
    SCRATCH = "scratch"  # a stopped build's, or an upload's


@dataclass(frozen=True)
class Garbage:
    kind: GarbageKind
    ref: str  # a path, or an image's tag
    size: int  # bytes
    app: str | None = None
    why: str = ""


@dataclass
class Plan:
    items: list[Garbage] = field(default_factory=list)
    kept_models: dict[str, list[str]] = field(default_factory=dict)  # repo id -> why

    @property
    def size(self) -> int:
        return sum(item.size for item in self.items)


def collect(
    store: Store, settings: Settings, engine: ContainerEngine | None, *, app: str | None = None,
    fetching: Iterable[str] = (), now: float | None = None,
) -> Plan:  # fmt: skip
    """What may go (of one ``app``, or everything); ``fetching``: models being downloaded."""
    now = time.time() if now is None else now
    kept = store.kept_releases(settings.keep_releases)
    apps = {a.name: store.sandbox_id(a.name) for a in store.list_apps()}
    building = {name for name in apps if _building(store, name)}
    plan = Plan()
    for name, sandbox_id in sorted(apps.items()):
        if (app is not None and name != app) or name in building:
            continue
        mine = [k for k in kept if k.app == name]
        box = sandbox_for(settings, name, sandbox_id)
        slugs = {k.artifact.reference for k in mine if k.artifact.kind is ArtifactKind.SLUG}
        venvs = {str(Path(k.artifact.command[0]).parent.parent) for k in mine
                 if k.artifact.kind is ArtifactKind.SLUG}  # fmt: skip
        plan.items += _stale(box.slugs, slugs, GarbageKind.SLUG, name, now)
        plan.items += _stale(box.venvs, venvs, GarbageKind.VENV, name, now)
        if engine is not None:
            images = {k.artifact.reference for k in mine if k.artifact.kind is ArtifactKind.IMAGE}
            plan.items += _stale_images(engine, name, images)
    if app is None:
        plan.items += _orphans(settings, apps, now)
        plan.items += leftovers(settings, now)
        plan.items += _models(settings, kept, set(fetching), plan, now)
    return plan


def _building(store: Store, app: str) -> bool:
    return any(b.status is BuildStatus.BUILDING for b in store.builds.list(app, limit=5))


def _stale(folder: Path, kept: set[str], kind: GarbageKind, app: str, now: float) -> list[Garbage]:
    found = []
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            scratch = entry.name.startswith(".")  # half-made by a build, maybe still making it
            if str(entry) in kept or (scratch and now - entry.lstat().st_mtime < FRESH_S):
                continue
            found.append(Garbage(kind, str(entry), _size(entry), app,
                                 f"no kept release of {app} runs it"))  # fmt: skip
    return found


def _stale_images(engine: ContainerEngine, app: str, kept: set[str]) -> list[Garbage]:
    found = []
    for tag, _created, size in engine.images_of(f"kiln/{app}"):
        if local_name(tag) not in kept:  # kept under its local name, pushed or not
            found.append(Garbage(GarbageKind.IMAGE, tag, size, app,
                                 f"no kept release of {app} runs it"))  # fmt: skip
    return found


def _orphans(settings: Settings, apps: dict[str, int], now: float) -> list[Garbage]:
    """Sandboxes and logs of apps that no longer exist (destroyed, or a crash half-way)."""
    found = []
    live = {f"{name}.{sandbox_id}" for name, sandbox_id in apps.items()}
    root = settings.resolved_sandbox_dir
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            if entry.name.startswith(".") or entry.name in live or not entry.is_dir():
                continue
            if now - entry.lstat().st_mtime >= 60:
                found.append(Garbage(GarbageKind.SANDBOX, str(entry), _size(entry),
                                     entry.name.rsplit(".", 1)[0], "its app was destroyed"))  # fmt: skip
    if settings.log_dir.is_dir():
        for log in sorted(settings.log_dir.glob("*.jsonl*")):
            name = log.name.split(".jsonl", 1)[0]
            if name not in apps:
                found.append(Garbage(GarbageKind.LOG, str(log), _size(log), name,
                                     "its app was destroyed"))  # fmt: skip
    return found


def leftovers(
    settings: Settings, now: float | None = None, fresh_s: float = FRESH_S
) -> list[Garbage]:
    """Uploads and build scratch a stopped build left (``fresh_s=0`` at start-up: every one)."""
    now = time.time() if now is None else now
    found = []
    for folder in (settings.home / "uploads", settings.home / "builds"):
        if folder.is_dir():
            for entry in sorted(folder.iterdir()):
                if now - entry.lstat().st_mtime >= fresh_s:
                    found.append(Garbage(GarbageKind.SCRATCH, str(entry), _size(entry), None,
                                         "left by a stopped build"))  # fmt: skip
    return found


def _models(
    settings: Settings, kept: Iterable[KeptRelease], fetching: set[str], plan: Plan, now: float
) -> list[Garbage]:
    cache = model_cache(settings)
    if not cache.is_dir():
        return []
    wanted: dict[str, list[str]] = {}
    for release in kept:
        if not release.manifest:
            continue
        try:
            models = Manifest.model_validate_json(release.manifest).models()
        except ValueError:
            continue
        for model in models:
            wanted.setdefault(model.cache_folder, []).append(f"{release.app} v{release.version}")
    found = []
    for folder in sorted(cache.glob("models--*")):
        repo = folder.name.removeprefix("models--").replace("--", "/")
        if folder.name in wanted:
            plan.kept_models[repo] = sorted(wanted[folder.name])
        elif repo in fetching:
            plan.kept_models[repo] = ["a deploy in progress needs it"]
        elif now - folder.stat().st_mtime < FRESH_S:
            plan.kept_models[repo] = ["fetched within the last hour"]
        else:
            found.append(Garbage(GarbageKind.MODEL, str(folder), _size(folder), None,
                                 "no kept release serves it"))  # fmt: skip
    return found


def sweep(plan: Plan, engine: ContainerEngine | None) -> None:
    """Remove what ``plan`` lists; what cannot be removed is logged, not raised."""
    for item in plan.items:
        try:
            if item.kind is GarbageKind.IMAGE:
                if engine is not None:
                    engine.remove_image(item.ref)
            elif Path(item.ref).is_dir() and not Path(item.ref).is_symlink():
                shutil.rmtree(item.ref)  # never follows links (it works from directory fds)
            else:
                Path(item.ref).unlink(missing_ok=True)
        except Exception:
            logger.exception("could not remove %s %s", item.kind, item.ref)


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(directory) / name).lstat().st_size
            except OSError:
                continue
    return total
