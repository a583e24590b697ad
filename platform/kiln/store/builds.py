"""Build records: started, finished with their log and artifact, listed per app."""

from __future__ import annotations

__all__ = ["BuildOutcome", "BuildStore"]

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kiln.errors import NotFound
from kiln.models import Artifact, BuildInfo, BuildStatus
from kiln.store.tables import App, Build, Release, utcnow

SessionFactory = Callable[[], AbstractContextManager[Session]]
AppLookup = Callable[[Session, str], App]


@dataclass(frozen=True)
class BuildOutcome:
    """What a succeeded build records, in the transaction of the release it made."""

    source_digest: str | None
    runtime: str | None
    manifest: str | None
    log: Callable[[int], str]  # the whole log, given the release's version


class BuildStore:
    """``store.builds``: the build history of every app."""

    def __init__(self, session: SessionFactory, app: AppLookup) -> None:
        self._session = session
        self._app = app

    def start(self, app: str, *, actor: str, commit: str | None = None) -> BuildInfo:
        with self._session() as session:
            build = Build(
                app=self._app(session, app), status=BuildStatus.BUILDING, actor=actor, commit=commit
            )
            session.add(build)
            session.flush()
            return self._info(session, build)

    def finish(
        self,
        build_id: int,
        *,
        status: BuildStatus,
        log: str,
        source_digest: str | None = None,
        runtime: str | None = None,
        artifact: Artifact | None = None,
        manifest: str | None = None,
        error: str | None = None,
    ) -> BuildInfo:
        with self._session() as session:
            build = session.get(Build, build_id)
            assert build is not None, f"build {build_id} vanished while running"
            build.status = status
            build.log = log
            build.source_digest = source_digest
            build.runtime = runtime
            build.artifact = artifact.model_dump_json() if artifact else None
            build.manifest = manifest
            build.error = error
            build.finished_at = utcnow()
            session.flush()
            return self._info(session, build)

    def succeed_in(
        self, session: Session, build_id: int, artifact: Artifact, outcome: BuildOutcome,
        version: int,
    ) -> None:  # fmt: skip
        """Within the release's transaction: the build that made it, finished."""
        build = session.get(Build, build_id)
        assert build is not None, f"build {build_id} vanished while running"
        build.status = BuildStatus.SUCCEEDED
        build.log = outcome.log(version)
        build.source_digest = outcome.source_digest
        build.runtime = outcome.runtime
        build.artifact = artifact.model_dump_json()
        build.manifest = outcome.manifest
        build.finished_at = utcnow()

    def list(self, app: str, limit: int = 50) -> list[BuildInfo]:
        with self._session() as session:
            owner = self._app(session, app)
            rows = session.scalars(
                select(Build).where(Build.app_id == owner.id).order_by(Build.id.desc()).limit(limit)
            )
            return [self._info(session, build) for build in rows]

    def get(self, app: str, build_id: int) -> BuildInfo:
        with self._session() as session:
            return self._info(session, self._get(session, app, build_id))

    def log(self, app: str, build_id: int) -> str:
        with self._session() as session:
            return self._get(session, app, build_id).log

    def manifest(self, app: str, build_id: int) -> str | None:
        with self._session() as session:
            return self._get(session, app, build_id).manifest

    def fail_interrupted(self) -> int:
        """Mark builds left 'building' by a control plane that stopped as failed; how many."""
        with self._session() as session:
            result = session.execute(
                update(Build)
                .where(Build.status == BuildStatus.BUILDING)
                .values(
                    status=BuildStatus.FAILED,
                    error="interrupted: the control plane stopped during the build; deploy again",
                    finished_at=utcnow(),
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def _get(self, session: Session, app: str, build_id: int) -> Build:
        owner = self._app(session, app)
        build = session.scalar(select(Build).where(Build.app_id == owner.id, Build.id == build_id))
        if build is None:
            raise NotFound(
                f"app {app} has no build {build_id}; see kiln builds -a {app}",
                code="build_not_found",
            )
        return build

    def _info(self, session: Session, build: Build) -> BuildInfo:
        release = session.scalar(select(Release.version).where(Release.build_id == build.id))
        return BuildInfo(
            id=build.id,
            app=build.app.name,
            status=BuildStatus(build.status),
            source_digest=build.source_digest,
            commit=build.commit,
            runtime=build.runtime,
            artifact=Artifact.model_validate_json(build.artifact) if build.artifact else None,
            error=build.error,
            release=release,
            actor=build.actor,
            created_at=build.created_at,
            finished_at=build.finished_at,
            duration_s=_seconds(build.created_at, build.finished_at),
        )


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else round((end - start).total_seconds(), 2)
