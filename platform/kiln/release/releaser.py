"""The release stage: everything between an artifact and what an app runs, and the one writer of
it. A deploy's release attaches the manifest's add-ons, runs the release phase, and records the
release with its build in one transaction; config changes, rollbacks, add-ons, keys and scaling
go through here too, and each change wakes the reconciler (``notify``), so no caller has to.

    releaser = Releaser(store, settings, notify=reconciler.poke)
    release = releaser.release_build("chat", build_id=7, artifact=a, manifest=m, actor="me",
                                     log=log, sandbox=box, outcome=facts)

A deploy is atomic: the release and its add-ons exist together, or nothing changed. Add-ons are
journaled before their provider makes anything (``AddonStore.begin``); a failure undoes them; a
control plane stopped half-way undoes them at its next start (``recover``).
"""

from __future__ import annotations

__all__ = ["ReleaseFailed", "Releaser"]

import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence

from kiln.addons.base import AddonProvider, provider_for
from kiln.builds.log import BuildLog
from kiln.engine import ContainerEngine, connect_engine
from kiln.errors import KilnError
from kiln.git.repos import repo_path
from kiln.manifest import Manifest
from kiln.models import (
    AddonInfo,
    ApiKeyInfo,
    Artifact,
    ConfigChange,
    GcItem,
    GcReport,
    LogRecord,
    LogSource,
    NewApiKey,
    ReleaseInfo,
)
from kiln.release.gc import GarbageKind, Plan, collect, leftovers, sweep
from kiln.run.logs import append_records
from kiln.run.once import run_once
from kiln.run.serve_config import manifest_refusal
from kiln.sandbox import Sandbox, sandbox_for
from kiln.settings import Settings
from kiln.store import Store
from kiln.store.addons import AddonAttachment
from kiln.store.builds import BuildOutcome

logger = logging.getLogger(__name__)

Providers = Callable[[str, Settings], AddonProvider]


class ReleaseFailed(KilnError):
    """The release phase failed (weights, the release command): nothing was released."""

    status = 422
    default_code = "release_failed"


def _nothing() -> None:
    pass


class Releaser:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        notify: Callable[[], None] = _nothing,
        providers: Providers = provider_for,
        engine: Callable[[], ContainerEngine | None] | None = None,
        checkpoint: Callable[[str], None] = lambda _step: None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.notify = notify
        self.providers = providers
        self._engine = engine or (lambda: connect_engine(settings.resolved_docker_host))
        # Called between a deploy's steps; tests stop the control plane there.
        self.checkpoint = checkpoint
        self.fetching: set[str] = set()  # models a release phase is downloading: never pruned

    # -- a deploy's release ------------------------------------------------------------------

    def release_build(
        self, app: str, *, build_id: int, artifact: Artifact, manifest: Manifest | None,
        description: str, actor: str, log: BuildLog, sandbox: Sandbox, outcome: BuildOutcome,
        canary: int | None = None,
    ) -> ReleaseInfo:  # fmt: skip
        """Attach the add-ons ``manifest`` lists that the app lacks, run the release phase with
        the config the release will carry, then record the release, its add-ons and the
        finished build in one transaction, and roll it out. Raises (having undone the add-ons)
        if any step fails: then nothing changed."""
        refusal = manifest_refusal(manifest) if manifest is not None else None
        if refusal is not None:
            raise ReleaseFailed(
                f"kiln.toml asks for something Ray Serve refuses: {refusal}; fix it "
                "(kiln manifest:check) and deploy again",
                code="invalid_manifest",
            )
        share = canary or (manifest.rollout.canary if manifest is not None else None)
        if share:
            log.step(
                f"Canary: this release runs on {share}% of the replicas first (kiln canary -a {app})"
            )
        kinds = [k.value for k in manifest.addons] if manifest is not None else []
        models = [m.repo_id for m in manifest.models()] if manifest is not None else []
        self.fetching.update(models)  # until its release is recorded, no prune may take them
        have = {record.kind for record in self.store.addons.all(app)}
        made: list[tuple[AddonProvider, AddonAttachment]] = []
        try:
            for kind in kinds:
                if kind not in have:
                    made.append(self._provision(app, kind, None, build_id))
                    info = made[-1][1]
                    injected = (
                        f": sets {', '.join(sorted(info.config_vars))}" if info.config_vars else ""
                    )
                    log.step(f"Attached the {kind} add-on (kiln.toml){injected}")
            self.checkpoint("addons provisioned")
            if manifest is not None and (manifest.model is not None or manifest.release):
                extra = {k: v for _p, a in made for k, v in a.config_vars.items()}
                self._release_phase(app, build_id, manifest, artifact, log, sandbox, extra)
            self.checkpoint("release phase done")
            release = self.store.release_build(
                app, build_id=build_id, artifact=artifact,
                manifest=manifest.model_dump_json() if manifest else None,
                description=description, actor=actor, addons=[a for _p, a in made],
                outcome=outcome, canary=share,
            )  # fmt: skip
        except BaseException as exc:
            if isinstance(exc, Exception):  # a crash (a stop) leaves the journal to recover()
                self._undo(app, made)
            raise
        finally:
            self.fetching.difference_update(models)
        self.checkpoint("recorded")
        self.notify()
        return release

    def _provision(
        self, app: str, kind: str, name: str | None, build_id: int | None
    ) -> tuple[AddonProvider, AddonAttachment]:
        provider = self.providers(kind, self.settings)
        name = name or provider.kind.value
        self.store.addons.begin(app, provider.kind.value, name, provider.planned_state(app, name),
                                build_id)  # fmt: skip
        try:
            provisioned = provider.provision(app, name)
        except BaseException:
            self.store.addons.abandon(app, name)
            raise
        state = {**provisioned.state, "config_vars": sorted(provisioned.config_vars)}
        return provider, AddonAttachment(name, state, dict(provisioned.config_vars))

    def _undo(self, app: str, made: Sequence[tuple[AddonProvider, AddonAttachment]]) -> None:
        for provider, attachment in reversed(made):
            try:
                provider.deprovision(app, attachment.state)
            except Exception:  # keep undoing the others; the journal has it for recover()
                logger.exception("could not undo the %s add-on of %s", attachment.name, app)
                continue
            self.store.addons.abandon(app, attachment.name)

    def _release_phase(
        self, app: str, build_id: int, manifest: Manifest, artifact: Artifact, log: BuildLog,
        sandbox: Sandbox, injected: Mapping[str, str],
    ) -> None:  # fmt: skip
        """Before the release exists: the model's weights into the model cache, then kiln.toml's
        release command (migrations, warm-up) where the new dynos will run, with the config the
        release will carry. Either failing fails the deploy, and the running release stays.
        Lines also go to the app's release log (kiln logs --source release)."""
        from kiln.release.weights import prefetch

        def release_line(text: str) -> None:
            record = LogRecord(ts=time.time(), source=LogSource.RELEASE, process="kiln", line=text)
            append_records(self.settings.log_dir, app, [record])

        def step(text: str) -> None:
            log.step(text)
            release_line(text)

        def info(text: str) -> None:
            log.info(text)
            release_line(text)

        config = {**self.store.get_config(app), **injected}
        try:
            if manifest.model is not None:
                for model in manifest.models():
                    prefetch(model, self.settings, config.get("HF_TOKEN"), step, info)
            if manifest.release:
                step(f"Release phase: running `{manifest.release}`")
                env = {"PYTHONUNBUFFERED": "1", **manifest.env, **config, "KILN_APP": app,
                       "KILN_BUILD": str(build_id), "KILN_DYNO": "release"}  # fmt: skip
                limit = self.settings.release_timeout_s
                code = run_once(artifact, manifest.release, env, info, limit, sandbox=sandbox,
                                engine=self._engine() if artifact.kind == "image" else None)  # fmt: skip
                if code != 0:
                    ended = (
                        f"was stopped after {limit:g} s" if code is None else f"exited with {code}"
                    )
                    raise ReleaseFailed(
                        f"the release command `{manifest.release}` {ended} (its output is above)"
                        "; fix it, or remove release from kiln.toml, and deploy again"
                    )
                step("Release phase: the release command succeeded")
        except KilnError as exc:
            release_line(f"release phase failed: {exc.message}")
            raise

    # -- after a stop ------------------------------------------------------------------------

    def recover(self) -> None:
        """What a control plane that stopped mid-deploy left: its builds failed, the add-ons
        it was provisioning undone (no release carries them), its uploads and build scratch
        removed. A release it recorded stands, and the reconciler rolls it out."""
        sweep(Plan(items=leftovers(self.settings, fresh_s=0)), None)
        interrupted = self.store.builds.fail_interrupted()
        if interrupted:
            logger.warning("%d build(s) were interrupted by a stop; marked failed", interrupted)
        for app, record in self.store.addons.pending():
            try:
                self.providers(record.kind, self.settings).deprovision(app, record.state)
            except Exception:
                logger.exception("could not undo the half-made %s add-on of %s", record.name, app)
                continue
            self.store.addons.abandon(app, record.name)
            logger.warning("undid the %s add-on of %s, left half-made by a stop", record.name, app)

    # -- changes that are not deploys --------------------------------------------------------

    def set_config(self, app: str, changes: Mapping[str, str | None], actor: str) -> ConfigChange:
        change = self.store.update_config(app, changes, actor=actor)
        if change.changed:
            self.notify()
        return change

    def rollback(self, app: str, version: int | None, actor: str) -> ReleaseInfo:
        release = self.store.rollback(app, version, actor=actor)
        self.notify()
        return release

    def attach_addon(self, app: str, kind: str, name: str | None, actor: str) -> AddonInfo:
        """Provision an add-on and release its config vars, all or nothing."""
        self.store.get_app(app)
        provider, attachment = self._provision(app, kind, name, None)
        try:
            self.store.attach_addon(app, attachment, actor=f"{actor} (add-on {attachment.name})")
        except BaseException as exc:
            if isinstance(exc, Exception):
                self._undo(app, [(provider, attachment)])
            raise
        self.notify()
        record = self.store.addons.get(app, attachment.name)
        return record.info(provider.status(record.state))

    def detach_addon(self, app: str, name: str, actor: str) -> AddonInfo:
        """Remove its config vars (a release), then what its provider made, then the add-on."""
        record = self.store.addons.get(app, name)
        if record.config_vars:
            self.store.update_config(app, dict.fromkeys(record.config_vars),
                                     actor=f"{actor} (add-on {name})")  # fmt: skip
        self.providers(record.kind, self.settings).deprovision(app, record.state)
        self.store.addons.remove(app, name)
        self.notify()
        return record.info("destroyed")

    def create_key(
        self, app: str, name: str, expires_in_s: float | None, rate_per_s: float | None
    ) -> NewApiKey:
        key = self.store.keys.create(app, name, expires_in_s, rate_per_s)
        self.notify()
        return key

    def revoke_key(self, app: str, prefix: str) -> ApiKeyInfo:
        key = self.store.keys.revoke(app, prefix)
        self.notify()  # the replicas stop accepting it within about a second
        return key

    def end_canary(self, app: str, *, promote: bool, reason: str, actor: str) -> ReleaseInfo:
        """Promote the app's canary (every replica runs it) or abort it (every replica goes
        back to the release before it); the release log says who decided and why."""
        release = self.store.end_canary(app, promote=promote, reason=reason)
        verb = "promoted" if promote else "aborted"
        line = f"canary v{release.version} {verb} by {actor}: {reason}"
        append_records(self.settings.log_dir, app,
                       [LogRecord(ts=time.time(), source=LogSource.RELEASE, process="kiln", line=line)])  # fmt: skip
        self.notify()
        return release

    def set_formation(self, app: str, formation: str | None) -> None:
        self.store.set_formation(app, formation)
        self.notify()

    def destroy_app(self, app: str) -> list[str]:
        """The app and all of it: its Serve application, its add-ons (a vector store's database
        and role), repository, logs, artifacts (images, sandbox: slugs, virtualenvs) and the
        cached models no other app keeps; a new app of the same name starts clean. Returns what
        could not be removed (the rest is)."""
        records = self.store.addons.all(app)
        sandbox = sandbox_for(self.settings, app, self.store.sandbox_id(app))
        self.store.destroy_app(app)
        self.notify()  # its Serve application goes with it
        problems: list[str] = []
        for record in records:
            try:
                self.providers(record.kind, self.settings).deprovision(app, record.state)
            except Exception as exc:
                problems.append(f"the {record.name} add-on: {exc}")
        engine = self._engine()
        paths = [repo_path(self.settings.home, app), sandbox.root,
                 *self.settings.log_dir.glob(f"{app}.jsonl*")]  # fmt: skip
        for path in paths:
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            except OSError as exc:
                problems.append(f"{path}: {exc.strerror}")
        if engine is not None:
            for tag, _created, _size in engine.images_of(f"kiln/{app}"):
                try:
                    engine.remove_image(tag)
                except Exception as exc:
                    problems.append(f"image {tag}: {exc}")
        self.collect(models_only=True)  # models it alone used (and any other unused ones)
        return problems

    def collect(
        self, *, app: str | None = None, dry_run: bool = False, models_only: bool = False
    ) -> GcReport:
        """Garbage collection (``kiln gc``): everything, or one app's old artifacts (after each
        of its deploys), or only the model cache (``kiln models:prune``)."""
        engine = None if models_only else self._engine()
        plan = collect(self.store, self.settings, engine, app=app, fetching=self.fetching)
        if models_only:
            plan.items = [i for i in plan.items if i.kind is GarbageKind.MODEL]
        if not dry_run:
            sweep(plan, engine)
        return GcReport(
            dry_run=dry_run, freed=plan.size, kept_models=plan.kept_models,
            items=[GcItem(kind=i.kind.value, ref=i.ref, size=i.size, app=i.app, why=i.why)
                   for i in plan.items],
        )  # fmt: skip
