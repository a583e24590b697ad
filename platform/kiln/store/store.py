"""The store: apps, their numbered releases with encrypted config, and platform tokens.

store = Store.open(Settings(home=Path("/tmp/kiln-demo")))
store.create_app("echo", actor="me").release      # 1: every app starts at v1
store.update_config("echo", {"HF_TOKEN": "hf_x"}, actor="me").release.version  # 2
"""

from __future__ import annotations

__all__ = ["KeptRelease", "Store"]

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from kiln import names, tokens
from kiln.errors import Conflict, InvalidInput, NotFound
from kiln.models import (
    AppInfo,
    Artifact,
    CanaryPart,
    ConfigChange,
    Deployment,
    NewToken,
    ReleaseInfo,
    ReleaseStatus,
    TokenInfo,
    TokenScope,
)
from kiln.settings import Settings
from kiln.store.addons import AddonAttachment, AddonStore, KeyStore, attach_in
from kiln.store.builds import BuildOutcome, BuildStore
from kiln.store.db import migrate, open_engine
from kiln.store.tables import App, Counter, Release, Token, utcnow
from kiln.vault import Vault, load_vault

# Writing last_used_at on every request would make each API call a write; once a minute is enough.
_TOKEN_TOUCH_INTERVAL = timedelta(seconds=60)


class Store:
    """All of the control plane's durable state, behind plain methods returning shared models."""

    def __init__(self, engine: Engine, vault: Vault) -> None:
        self.engine = engine
        self._vault = vault
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.builds = BuildStore(self._session, self._app)
        self.addons = AddonStore(self._session, self._app)
        self.keys = KeyStore(self._session, self._app)

    @classmethod
    def open(cls, settings: Settings) -> Store:
        """Open (and migrate) the store these settings name."""
        engine = open_engine(settings.resolved_database_url)
        migrate(engine)
        return cls(engine, load_vault(settings))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # -- apps ----------------------------------------------------------------------------------

    def create_app(self, name: str, *, actor: str) -> AppInfo:
        names.app_name(name)
        try:
            with self._session() as session:
                app = App(name=name, sandbox_id=self._next(session, "app_sandbox"))
                session.add(app)
                session.flush()
                session.add(self._release(app, 1, "Initial release", {}, actor))
        except IntegrityError:
            raise Conflict(
                f"app {name} already exists; pick another name, or use it with -a {name}",
                code="app_exists",
            ) from None
        return self.get_app(name)

    def list_apps(self) -> list[AppInfo]:
        with self._session() as session:
            rows = session.execute(
                select(App, func.max(Release.version))
                .outerjoin(Release)
                .group_by(App.id)
                .order_by(App.name)
            ).all()
            return [_app_info(app, version) for app, version in rows]

    def get_app(self, name: str) -> AppInfo:
        with self._session() as session:
            app = self._app(session, name)
            return _app_info(app, self._latest(session, app).version)

    def sandbox_id(self, name: str) -> int:
        """The number of the app's sandbox (its uid's offset): never one another app had."""
        with self._session() as session:
            app = self._app(session, name)
            return app.sandbox_id if app.sandbox_id is not None else app.id

    def destroy_app(self, name: str) -> None:
        with self._session() as session:
            session.delete(self._app(session, name))

    # -- config and releases -------------------------------------------------------------------

    def get_config(self, name: str) -> dict[str, str]:
        with self._session() as session:
            return self._vault.open(self._latest(session, self._app(session, name)).config_sealed)

    def update_config(
        self, name: str, changes: Mapping[str, str | None], *, actor: str
    ) -> ConfigChange:
        """Set (str) and unset (None) config vars; a real change makes a new release."""
        if not changes:
            raise InvalidInput("no config vars given; e.g. kiln config:set KEY=VALUE", code="empty")
        for key in changes:
            names.config_key(key)
        with self._session() as session:
            app = self._app(session, name, lock=True)
            current = self._latest(session, app)
            config = self._vault.open(current.config_sealed)
            updated = {k: v for k, v in config.items() if changes.get(k, v) is not None}
            updated.update({k: v for k, v in changes.items() if v is not None})
            if updated == config:
                return ConfigChange(changed=False, release=self._info(current), config=config)
            self._supersede(session, app, current.version + 1)
            release = self._release(
                app, current.version + 1, _describe(config, updated), updated, actor,
                self._runnable(session, app),
            )  # fmt: skip
            session.add(release)
            session.flush()
            return ConfigChange(changed=True, release=self._info(release), config=updated)

    def release_build(
        self,
        name: str,
        *,
        build_id: int,
        artifact: Artifact,
        manifest: str | None,
        description: str,
        actor: str,
        addons: Sequence[AddonAttachment] = (),
        outcome: BuildOutcome | None = None,
        canary: int | None = None,
    ) -> ReleaseInfo:
        """A new release running ``artifact``, with the config of the app's latest release plus
        what ``addons`` (journaled, provisioned) inject, which become attached; and, with an
        ``outcome``, the build finished as succeeded; with ``canary``, it first runs on that
        percent of the replicas. One transaction: all of it, or none."""
        with self._session() as session:
            app = self._app(session, name, lock=True)
            current = self._latest(session, app)
            self._supersede(session, app, current.version + 1)
            sealed = current.config_sealed
            if addons:
                config = self._vault.open(sealed)
                for addon in addons:
                    attach_in(session, app, addon.name, addon.state)
                    config.update(addon.config_vars)
                sealed = self._vault.seal(config)
            release = Release(
                app=app,
                version=current.version + 1,
                description=description,
                config_sealed=sealed,
                status=ReleaseStatus.PENDING,
                actor=actor,
                build_id=build_id,
                artifact=artifact.model_dump_json(),
                manifest=manifest,
                rollout=json.dumps({"canary": canary}) if canary else None,
            )
            session.add(release)
            session.flush()
            if outcome is not None:
                self.builds.succeed_in(session, build_id, artifact, outcome, release.version)
            return self._info(release)

    def attach_addon(self, name: str, addon: AddonAttachment, *, actor: str) -> ConfigChange | None:
        """A journaled, provisioned add-on becomes attached, and its config vars a new release
        (None: it injects none). One transaction."""
        with self._session() as session:
            app = self._app(session, name, lock=True)
            attach_in(session, app, addon.name, addon.state)
            if not addon.config_vars:
                return None
            current = self._latest(session, app)
            config = self._vault.open(current.config_sealed)
            updated = {**config, **addon.config_vars}
            self._supersede(session, app, current.version + 1)
            release = self._release(
                app, current.version + 1, f"Attach {addon.name} (sets {', '.join(sorted(addon.config_vars))})",
                updated, actor, self._runnable(session, app),
            )  # fmt: skip
            session.add(release)
            session.flush()
            return ConfigChange(changed=True, release=self._info(release), config=updated)

    def rollback(self, name: str, version: int | None, *, actor: str) -> ReleaseInfo:
        """A new release with the artifact, config and manifest of ``version`` (default: the
        last good release before the current one)."""
        with self._session() as session:
            app = self._app(session, name, lock=True)
            current = self._latest(session, app)
            if version is None:
                target = session.scalar(
                    select(Release)
                    .where(Release.app_id == app.id, Release.version < current.version,
                           Release.status == ReleaseStatus.SUCCEEDED, Release.artifact.is_not(None))
                    .order_by(Release.version.desc())
                )  # fmt: skip
                if target is None:
                    raise InvalidInput(
                        f"{name} has no earlier release that ran; see kiln releases -a {name}",
                        code="nothing_to_roll_back_to",
                    )
            else:
                target = self._release_row(session, app, version)
            if target.artifact is None:
                raise InvalidInput(
                    f"v{target.version} of {name} ran nothing (it predates the first deploy); "
                    "roll back to a release made by a deploy",
                    code="nothing_to_roll_back_to",
                )
            self._supersede(session, app, current.version + 1)
            release = Release(
                app=app,
                version=current.version + 1,
                description=f"Rollback to v{target.version}",
                config_sealed=target.config_sealed,
                status=ReleaseStatus.PENDING,
                actor=actor,
                build_id=target.build_id,
                artifact=target.artifact,
                manifest=target.manifest,
            )
            session.add(release)
            session.flush()
            return self._info(release)

    def deployables(self) -> list[Deployment]:
        """For each app with something to run: its newest release that has not failed; during a
        canary, the last release that went live, with the canary beside it."""
        with self._session() as session:
            found = []
            for app in session.scalars(select(App).order_by(App.name)):
                release = self._runnable(session, app)
                canary = self._canary(session, app)
                if canary is not None:
                    release = canary[1]
                if release is not None and release.artifact is not None:
                    found.append(
                        Deployment(
                            app=app.name,
                            sandbox_id=app.sandbox_id if app.sandbox_id is not None else app.id,
                            release=release.version,
                            status=ReleaseStatus(release.status),
                            artifact=Artifact.model_validate_json(release.artifact),
                            config_sealed=release.config_sealed,
                            manifest=release.manifest,
                            formation=app.formation,
                            canary=_canary_part(canary[0]) if canary is not None else None,
                        )
                    )
            return found

    # -- canaries ------------------------------------------------------------------------------

    def canary_started(self, name: str, version: int) -> None:
        """Its share of the replicas runs it: the clock of an automatic promotion starts."""
        with self._session() as session:
            release = self._release_row(session, self._app(session, name), version)
            rollout = _rollout(release)
            if release.status == ReleaseStatus.PENDING and not rollout.get("ended"):
                release.status = ReleaseStatus.CANARY
                release.rollout = json.dumps({**rollout, "started_at": time.time()})

    def end_canary(self, name: str, *, promote: bool, reason: str) -> ReleaseInfo:
        """Promote the app's canary (it rolls out to every replica) or abort it (it fails, and
        every replica runs the previous release again)."""
        with self._session() as session:
            app = self._app(session, name, lock=True)
            pair = self._canary(session, app)
            if pair is None:
                raise Conflict(
                    f"{name} runs no canary; kiln deploy --canary 25 starts one",
                    code="no_canary",
                )
            release = pair[0]
            rollout = {**_rollout(release), "ended": "promoted" if promote else "aborted",
                       "ended_at": time.time(), "reason": reason}  # fmt: skip
            release.rollout = json.dumps(rollout)
            release.status = ReleaseStatus.PENDING if promote else ReleaseStatus.FAILED
            release.status_message = None if promote else f"canary aborted: {reason}"
            return self._info(release)

    def _canary(self, session: Session, app: App) -> tuple[Release, Release] | None:
        """(canary, the release it is judged against) while the app's newest release is a
        canary that has not ended, and an earlier one went live."""
        newest = self._runnable(session, app)
        if newest is None or newest.status not in (ReleaseStatus.PENDING, ReleaseStatus.CANARY):
            return None
        rollout = _rollout(newest)
        if not rollout.get("canary") or rollout.get("ended"):
            return None
        stable = session.scalar(
            select(Release)
            .where(Release.app_id == app.id, Release.version < newest.version,
                   Release.status == ReleaseStatus.SUCCEEDED, Release.artifact.is_not(None))
            .order_by(Release.version.desc())
        )  # fmt: skip
        return None if stable is None else (newest, stable)

    def _supersede(self, session: Session, app: App, version: int) -> None:
        """A new release ends a canary still being judged: it fails, never promoted."""
        pair = self._canary(session, app)
        if pair is not None:
            canary = pair[0]
            canary.rollout = json.dumps({**_rollout(canary), "ended": "superseded"})
            canary.status = ReleaseStatus.FAILED
            canary.status_message = f"canary ended: v{version} came before it was promoted"

    def set_release_status(
        self, name: str, version: int, status: ReleaseStatus, message: str | None = None
    ) -> None:
        with self._session() as session:
            release = self._release_row(session, self._app(session, name), version)
            release.status = status
            release.status_message = message

    def get_formation(self, name: str) -> str | None:
        with self._session() as session:
            return self._app(session, name).formation

    def set_formation(self, name: str, formation: str | None) -> None:
        with self._session() as session:
            self._app(session, name, lock=True).formation = formation

    def kept_releases(self, keep: int) -> list[KeptRelease]:
        """What garbage collection keeps, per app: the newest ``keep`` releases that ran
        something, the one that runs now and a canary, with their artifacts and models."""
        found = []
        with self._session() as session:
            for app in session.scalars(select(App).order_by(App.name)):
                rows = list(
                    session.scalars(
                        select(Release)
                        .where(Release.app_id == app.id, Release.artifact.is_not(None))
                        .order_by(Release.version.desc())
                        .limit(keep)
                    )
                )
                runnable = self._runnable(session, app)
                canary = self._canary(session, app)
                for extra in (runnable, canary[1] if canary else None):
                    if extra is not None and extra.artifact and extra not in rows:
                        rows.append(extra)
                for release in rows:
                    assert release.artifact is not None
                    found.append(KeptRelease(
                        app=app.name, sandbox_id=app.sandbox_id or app.id, version=release.version,
                        artifact=Artifact.model_validate_json(release.artifact),
                        manifest=release.manifest,
                    ))  # fmt: skip
        return found

    def list_releases(self, name: str) -> list[ReleaseInfo]:
        with self._session() as session:
            app = self._app(session, name)
            rows = session.scalars(
                select(Release).where(Release.app_id == app.id).order_by(Release.version.desc())
            )
            return [self._info(release) for release in rows]

    def get_release(self, name: str, version: int) -> ReleaseInfo:
        with self._session() as session:
            return self._info(self._release_row(session, self._app(session, name), version))

    def _release_row(self, session: Session, app: App, version: int) -> Release:
        release = session.scalar(
            select(Release).where(Release.app_id == app.id, Release.version == version)
        )
        if release is None:
            raise NotFound(
                f"app {app.name} has no release v{version}; see kiln releases -a {app.name}",
                code="release_not_found",
            )
        return release

    def _runnable(self, session: Session, app: App) -> Release | None:
        """The newest release that has not failed: what the app should run."""
        return session.scalar(
            select(Release)
            .where(Release.app_id == app.id, Release.status != ReleaseStatus.FAILED)
            .order_by(Release.version.desc())
        )

    # -- platform tokens -----------------------------------------------------------------------

    def create_token(
        self,
        name: str,
        *,
        scope: TokenScope = TokenScope.ADMIN,
        apps: Sequence[str] = (),
        expires_in_s: float | None = None,
    ) -> NewToken:
        """A new token; ``deploy`` and ``read`` tokens name the apps they are for."""
        if scope is TokenScope.ADMIN and apps:
            raise InvalidInput(
                "an admin token is for every app; leave out --app, or give --scope deploy or read",
                code="bad_token_scope",
            )
        if scope is not TokenScope.ADMIN and not apps:
            raise InvalidInput(
                f"a {scope} token is for named apps: add --app APP (one or more)",
                code="bad_token_scope",
            )
        secret = tokens.mint(tokens.PLATFORM_TOKEN)
        with self._session() as session:
            for app in apps:
                self._app(session, app)  # each must exist
            token = Token(
                name=name, prefix=tokens.display_prefix(secret), digest=tokens.digest(secret),
                scope=scope.value, apps=json.dumps(sorted(set(apps))),
                expires_at=utcnow() + timedelta(seconds=expires_in_s) if expires_in_s else None,
            )  # fmt: skip
            session.add(token)
            session.flush()
            return NewToken(**_token_info(token).model_dump(), token=secret)

    def list_tokens(self) -> list[TokenInfo]:
        with self._session() as session:
            return [_token_info(t) for t in session.scalars(select(Token).order_by(Token.id))]

    def revoke_token(self, token_id: int) -> TokenInfo:
        with self._session() as session:
            token = session.get(Token, token_id)
            if token is None:
                raise NotFound(
                    f"no platform token with id {token_id}; see kiln tokens", code="token_not_found"
                )
            session.delete(token)
            return _token_info(token)

    def authenticate(self, secret: str) -> TokenInfo | None:
        """The token a secret belongs to (expired or not: the caller says why it is refused),
        or None; malformed secrets never reach the database."""
        if not tokens.well_formed(secret, tokens.PLATFORM_TOKEN):
            return None
        with self._session() as session:
            token = session.scalar(select(Token).where(Token.digest == tokens.digest(secret)))
            if token is None:
                return None
            now = utcnow()
            if token.last_used_at is None or now - token.last_used_at > _TOKEN_TOUCH_INTERVAL:
                token.last_used_at = now
            return _token_info(token)

    def count_tokens(self) -> int:
        with self._session() as session:
            return session.scalar(select(func.count(Token.id))) or 0

    # -- helpers -------------------------------------------------------------------------------

    def _app(self, session: Session, name: str, *, lock: bool = False) -> App:
        """The app row; ``lock`` holds it until commit so concurrent releases number in turn."""
        names.app_name(name)
        query = select(App).where(App.name == name)
        app = session.scalar(query.with_for_update() if lock else query)
        if app is None:
            raise NotFound(f"app {name} not found; see kiln apps", code="app_not_found")
        return app

    def _next(self, session: Session, name: str) -> int:
        counter = session.scalar(select(Counter).where(Counter.name == name).with_for_update())
        if counter is None:
            counter = Counter(name=name, value=0)
            session.add(counter)
        counter.value += 1
        session.flush()
        return counter.value

    def _latest(self, session: Session, app: App) -> Release:
        release = session.scalar(
            select(Release).where(Release.app_id == app.id).order_by(Release.version.desc())
        )
        assert release is not None, f"app {app.name} has no release; every app is created with v1"
        return release

    def _release(
        self,
        app: App,
        version: int,
        description: str,
        config: dict[str, str],
        actor: str,
        previous: Release | None = None,
    ) -> Release:
        return Release(
            app=app,
            version=version,
            description=description,
            config_sealed=self._vault.seal(config),
            # Something to run means the run stage must bring it up before it counts.
            status=ReleaseStatus.PENDING
            if previous is not None and previous.artifact
            else ReleaseStatus.SUCCEEDED,
            actor=actor,
            # A config change keeps running what the previous release ran.
            build_id=previous.build_id if previous else None,
            artifact=previous.artifact if previous else None,
            manifest=previous.manifest if previous else None,
        )

    def _info(self, release: Release) -> ReleaseInfo:
        return ReleaseInfo(
            version=release.version,
            description=release.description,
            status=ReleaseStatus(release.status),
            actor=release.actor,
            created_at=release.created_at,
            config_keys=sorted(self._vault.open(release.config_sealed)),
            status_message=release.status_message,
            build=release.build_id,
            commit=release.build.commit if release.build is not None else None,
            artifact=Artifact.model_validate_json(release.artifact) if release.artifact else None,
            canary=_rollout(release).get("canary"),
        )


@dataclass(frozen=True)
class KeptRelease:
    """A release whose artifact (and model) garbage collection keeps."""

    app: str
    sandbox_id: int
    version: int
    artifact: Artifact
    manifest: str | None


def _rollout(release: Release) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(release.rollout) if release.rollout else {}
    return loaded


def _canary_part(release: Release) -> CanaryPart:
    rollout = _rollout(release)
    started = rollout.get("started_at")
    return CanaryPart(
        release=release.version, status=ReleaseStatus(release.status), share=rollout["canary"],
        artifact=Artifact.model_validate_json(release.artifact or "{}"),
        config_sealed=release.config_sealed, manifest=release.manifest,
        started_at=datetime.fromtimestamp(started, UTC) if started else None,
    )  # fmt: skip


def _token_info(token: Token) -> TokenInfo:
    return TokenInfo(
        id=token.id, name=token.name, prefix=token.prefix, created_at=token.created_at,
        last_used_at=token.last_used_at, scope=TokenScope(token.scope),
        apps=json.loads(token.apps or "[]"), expires_at=token.expires_at,
    )  # fmt: skip


def _app_info(app: App, version: int | None) -> AppInfo:
    return AppInfo(name=app.name, created_at=app.created_at, release=version)


def _describe(before: dict[str, str], after: dict[str, str]) -> str:
    """Heroku's wording: "Set A, B config vars", "Remove C config vars", or both."""
    changed = sorted(k for k in after if before.get(k) != after[k])
    removed = sorted(k for k in before if k not in after)
    parts = []
    if changed:
        parts.append(f"Set {', '.join(changed)}")
    if removed:
        parts.append(f"{'remove' if parts else 'Remove'} {', '.join(removed)}")
    return f"{' and '.join(parts)} config vars"
