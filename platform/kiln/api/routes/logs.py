"""``/apps/{app}/logs``: build, release, dyno and router lines, merged by time; ``follow`` streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from kiln.api.deps import SettingsDep, StoreDep
from kiln.models import LogRecord, LogSource
from kiln.run.logs import app_log, last_records
from kiln.store import Store

router = APIRouter(prefix="/apps/{app}/logs", tags=["logs"])


def _shown(line: LogSource, asked: LogSource | None) -> bool:
    """Lines of the source asked for; with none asked, all but the engines' metric reports
    (machine-read, every few seconds: ``kiln logs --source metrics`` shows them)."""
    return line is not LogSource.METRICS if asked is None else line == asked


def _build_records(store: Store, app: str) -> list[LogRecord]:
    records = []
    for build in store.builds.list(app, limit=5):
        base = build.created_at.timestamp()
        for index, line in enumerate(store.builds.log(app, build.id).splitlines()):
            records.append(
                LogRecord(
                    ts=base + index * 1e-6,
                    source=LogSource.BUILD,
                    process=f"build.{build.id}",
                    line=line,
                )
            )
    return records


def _records(
    store: Store, log_dir: Path, app: str, source: LogSource | None, n: int
) -> list[LogRecord]:
    """The last ``n`` lines, reading only as far back as they go."""
    records = [] if source not in (None, LogSource.BUILD) else _build_records(store, app)
    if source is not LogSource.BUILD:
        records += last_records(log_dir, app, n, lambda r: _shown(r.source, source))
    return sorted(records, key=lambda r: r.ts)[-n:]


@router.get(
    "", response_class=StreamingResponse, responses={200: {"content": {"application/x-ndjson": {}}}}
)
async def logs(
    app: str,
    store: StoreDep,
    settings: SettingsDep,
    request: Request,
    n: int = Query(100, ge=1, le=100_000, description="How many recent lines."),
    source: Annotated[LogSource | None, Query(description="Only lines from this source.")] = None,
    follow: bool = Query(False, description="Keep streaming new lines (kiln logs --tail)."),
) -> StreamingResponse:
    store.get_app(app)
    log_dir: Path = settings.log_dir
    recent = _records(store, log_dir, app, source, n)

    async def stream() -> AsyncIterator[bytes]:
        for record in recent:
            yield record.model_dump_json().encode() + b"\n"
        if not follow:
            return
        path = app_log(log_dir, app)
        offset = path.stat().st_size if path.exists() else 0
        while not await request.is_disconnected():
            await asyncio.sleep(0.25)
            size = path.stat().st_size if path.exists() else 0
            if size < offset:  # rotated: the new file starts from its beginning
                offset = 0
            if size <= offset:
                continue
            with path.open("rb") as file:
                file.seek(offset)
                chunk = file.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            offset += len(complete)
            for line in complete.splitlines():
                try:
                    record = LogRecord.model_validate_json(line)
                except ValueError:
                    continue
                if _shown(record.source, source):
                    yield line + b"\n"

    return StreamingResponse(stream(), media_type="application/x-ndjson")
