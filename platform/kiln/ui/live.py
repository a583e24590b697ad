"""The dashboard's live parts, as server-sent events htmx swaps in: an app's state (a deploy
going live, replicas coming and going), its log as it is written, a build's log while it
builds; and the JSON of an app's last hour for its charts."""

from __future__ import annotations

__all__ = ["router"]

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from markupsafe import escape

from kiln.api.deps import PlatformDep
from kiln.control.platform import Platform
from kiln.models import BuildInfo, BuildStatus, LogSource
from kiln.route.figures import timeline
from kiln.run.logs import records_since
from kiln.ui.auth import ViewerDep
from kiln.ui.pages import app_state, process
from kiln.ui.session import COOKIE
from kiln.ui.templates import SECURITY_HEADERS, render

router = APIRouter()
EVERY_S = 1.0
LOG_LINES = 200  # the log a page opens with
HIDDEN = {LogSource.METRICS, LogSource.USAGE}


def event(name: str, html: str) -> bytes:
    """One server-sent event; each line of ``html`` its own ``data:`` line."""
    data = "".join(f"data: {line}\n" for line in (html.splitlines() or [""]))
    return f"event: {name}\n{data}\n".encode()


def _log_html(records: list[Any]) -> str:
    return "".join(
        f"<li><time>{time.strftime('%H:%M:%S', time.localtime(r.ts))}</time> "
        f'<b class="src-{r.source}">{escape(r.source)}[{escape(r.process)}]</b> '
        f"{escape(r.line)}</li>"
        for r in records
    )


def _stream(
    request: Request, platform: Platform, body: Callable[[], AsyncIterator[bytes]]
) -> StreamingResponse:
    """``body``'s events until the browser leaves or signs out."""
    sid = request.cookies.get(COOKIE)

    async def events() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        async for chunk in body():
            if await request.is_disconnected() or platform.ui_sessions.get(sid) is None:
                return
            yield chunk

    headers = {**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@router.get("/apps/{app}/events")
def app_events(
    request: Request, app: str, platform: PlatformDep, who: ViewerDep
) -> StreamingResponse:
    who.require("GET", "/apps/{app}", app)
    log_dir = platform.settings.log_dir

    async def body() -> AsyncIterator[bytes]:
        shown = ""
        seen: set[tuple[float, str, str]] = set()
        since = time.time() - 3600  # the page opens with the last LOG_LINES of the last hour
        first = True
        while True:
            state = await asyncio.to_thread(app_state, platform, who, app)
            html = render("_state.html", state)
            if html != shown:
                shown = html
                yield event("state", html)
            # Replicas ship lines in batches, a little late: look 10 s back, show each line once
            records = await asyncio.to_thread(records_since, log_dir, app, since - 10)
            fresh = [r for r in records if r.source not in HIDDEN
                     and (r.ts, r.process, r.line) not in seen]  # fmt: skip
            seen = {(r.ts, r.process, r.line) for r in records}
            if first:
                fresh, first = fresh[-LOG_LINES:], False
            since = max(records[-1].ts if records else since, time.time() - 30)
            yield event("log", _log_html(fresh)) if fresh else b": alive\n\n"
            await asyncio.sleep(EVERY_S)

    return _stream(request, platform, body)


@router.get("/apps/{app}/builds/{build_id}/events")
def build_events(
    request: Request, app: str, build_id: int, platform: PlatformDep, who: ViewerDep
) -> StreamingResponse:
    who.require("GET", "/apps/{app}/builds/{build_id}", app)
    store = platform.store

    def read() -> tuple[BuildInfo, list[str]]:
        """The build and its lines so far: from its log while it builds, else the stored one."""
        build = store.builds.get(app, build_id)
        running = platform.deployer.building.get(build_id)
        if build.status is BuildStatus.BUILDING and running is not None:
            return build, running.lines()
        return build, store.builds.log(app, build_id).splitlines()

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        while True:
            build, lines = await asyncio.to_thread(read)
            if len(lines) > sent:
                yield event("log", "".join(f"<li>{escape(line)}</li>" for line in lines[sent:]))
                sent = len(lines)
            if build.status is not BuildStatus.BUILDING:
                yield event("done", f'<span class="badge {build.status}">{build.status}</span>')
                return
            yield b": alive\n\n"
            await asyncio.sleep(EVERY_S / 2)

    return _stream(request, platform, body)


@router.get("/apps/{app}/series")
def series(app: str, platform: PlatformDep, who: ViewerDep, minutes: int = 60) -> dict[str, Any]:
    """The app's last ``minutes``, in 30 s steps: requests/s, 5xx/s, p95 and replicas."""
    who.require("GET", "/apps/{app}", app)
    minutes = max(5, min(minutes, 24 * 60))
    step = 30.0 if minutes <= 60 else 60.0 * (minutes // 60)
    now = time.time()
    since = now - minutes * 60
    ps = process(platform, app)
    running = ps.running if ps else 0
    records = records_since(platform.settings.log_dir, app, since)
    points = timeline(records, since, now, step, running)
    return {
        "step_s": step,
        "requests": sum(p.requests for p in points),
        "points": [asdict(p) | {"per_s": round(p.requests / step, 3),
                                "errors_per_s": round(p.errors / step, 3)} for p in points],
    }  # fmt: skip
