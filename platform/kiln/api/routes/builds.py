"""``/apps/{app}/builds``: upload a source archive and stream its build; list builds and logs."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from kiln.api.auth import Caller
from kiln.api.deps import PlatformDep, StoreDep
from kiln.errors import InvalidInput, KilnError
from kiln.models import ArtifactKind, BuildEvent, BuildInfo, ErrorDetail

router = APIRouter(prefix="/apps/{app}/builds", tags=["builds"])


async def _spool(request: Request, limit: int, directory: Path) -> Path:
    """Write the request body to a file, refusing bodies over ``limit`` bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=directory, suffix=".tar.gz", delete=False)  # noqa: SIM115
    path = Path(handle.name)
    size = 0
    try:
        with handle:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise InvalidInput(
                        f"the upload is over the limit of {limit / 2**20:.0f} MiB; keep weights and "
                        "data out of the source (.kilnignore), or raise KILN_MAX_UPLOAD_BYTES",
                        code="upload_too_large",
                    )
                handle.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise InvalidInput(
            "the upload is empty; send the app as a .tar.gz body", code="empty_upload"
        )
    return path


@router.post(
    "",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "BuildEvent lines"}},
)
async def create_build(
    app: str,
    request: Request,
    platform: PlatformDep,
    caller: Caller,
    commit: str | None = None,
    artifact: ArtifactKind | None = None,
    canary: Annotated[
        int | None, Query(ge=1, le=99, description="Run it on this percent of replicas first.")
    ] = None,
) -> StreamingResponse:
    """Deploy the ``.tar.gz`` body (build, then release); the response streams ``BuildEvent``
    lines as it runs. ``kiln deploy`` and the git hook both come here."""
    platform.store.get_app(app)
    settings = platform.settings
    deployer = platform.deployer
    deployer.builder.artifacts_for(artifact)  # refuse a kind this host cannot build, first
    deployer.queue.check()  # and a deploy no thread is free for, before reading its upload
    archive = await _spool(request, settings.max_upload_bytes, settings.home / "uploads")
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[BuildEvent] = asyncio.Queue()

    def sink(line: str) -> None:
        loop.call_soon_threadsafe(events.put_nowait, BuildEvent(line=line))

    async def run() -> None:
        try:
            result = await asyncio.wrap_future(queued)
            events.put_nowait(BuildEvent(build=result))
        except KilnError as exc:
            events.put_nowait(BuildEvent(error=ErrorDetail(code=exc.code, message=exc.message)))
        finally:
            archive.unlink(missing_ok=True)

    try:
        queued = deployer.queue.submit(lambda: deployer.deploy(
            app, archive, actor=caller.name, sink=sink, commit=commit, kind=artifact, canary=canary,
        ))  # fmt: skip
    except KilnError:
        archive.unlink(missing_ok=True)
        raise
    # The build goes on if the client goes away, as on Heroku; keep a reference until it ends.
    task = asyncio.create_task(run())
    platform.tasks.add(task)
    task.add_done_callback(platform.tasks.discard)

    async def stream() -> AsyncIterator[bytes]:
        while True:
            event = await events.get()
            yield event.model_dump_json(exclude_none=True).encode() + b"\n"
            if event.line is None:
                return

    return StreamingResponse(stream(), media_type="application/x-ndjson")


@router.get("")
def list_builds(app: str, store: StoreDep) -> list[BuildInfo]:
    return store.builds.list(app)


@router.get("/{build_id}")
def build_info(app: str, build_id: int, store: StoreDep) -> BuildInfo:
    return store.builds.get(app, build_id)


@router.get("/{build_id}/log", response_class=PlainTextResponse)
def build_log(app: str, build_id: int, store: StoreDep) -> str:
    return store.builds.log(app, build_id)
