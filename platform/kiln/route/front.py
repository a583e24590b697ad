"""The platform's front: what a URL answers when no app's route takes it (yet).

Ray Serve's proxy sends a request to the application with the longest route prefix matching its
path. Each app holds ``/<app>``; the front holds ``/``, so it gets every request no app takes:

- an app that is coming back (after ``kiln up``, until Serve has built its route): **503** with
  ``Retry-After``, so a client retries rather than concluding the app is gone;
- an app that runs no replicas (scaled to 0), has no release yet, or whose release Serve refused:
  **503** or **404**, saying which and what to do;
- a name no app has: **404**.

Every answer is JSON in the router's shape (``{"error": {"code", "message"}}``), in Kiln's words:
never Serve's own 404, which names its internal routes. The reconciler hands the front each app's
state as its ``user_config``, which Serve applies to the running replica without a restart.
"""

from __future__ import annotations

__all__ = ["Front", "answer", "build"]

import json
from typing import Any
from urllib.parse import unquote

from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import Response

from kiln.route.ingress import RETRY_AFTER_S
from kiln.run.serve_config import NO_RELEASE, REFUSED, STARTING, STOPPED
from kiln.run.warm import leave

# The front starts with the platform: it leaves the head a warm worker (kiln.run.warm) for the
# first replica, once the apps the platform brings back have had their start.
WARM_AFTER_S = 10.0


def build(args: dict[str, Any]) -> Application:
    """Serve's application builder (the front takes no arguments: its state is user_config)."""
    app: Application = Front.bind()  # type: ignore[attr-defined]
    return app


def answer(path: str, apps: dict[str, str]) -> tuple[int, str, str]:
    """The status, error code and message for a request to ``path`` no app's route took."""
    name = unquote(path).lstrip("/").split("/", 1)[0]
    state = apps.get(name)
    if not name:
        return 404, "no_app", "no app is served at /: each app is at /<app>/"
    if state == STARTING:
        return 503, "app_starting", (
            f"app {name!r} is starting (the platform is coming up, or its release is being "
            f"placed); try again in {RETRY_AFTER_S}s"
        )  # fmt: skip
    if state == STOPPED:
        return 503, "app_stopped", (
            f"app {name!r} runs no replicas (scaled to 0); its owner starts it with "
            f"kiln scale 1 -a {name}"
        )  # fmt: skip
    if state == NO_RELEASE:
        return (
            404,
            "no_release",
            (f"app {name!r} has no release yet; its owner deploys one with kiln deploy -a {name}"),
        )
    if state == REFUSED:
        return 503, "app_not_running", (
            f"app {name!r} is not running: Ray Serve refused its release's config; its owner "
            f"sees why with kiln releases -a {name}"
        )  # fmt: skip
    return 404, "no_such_app", f"no app is named {name[:60]!r} here"


@serve.deployment(name="front")
class Front:
    def __init__(self) -> None:
        self.apps: dict[str, str] = {}
        leave(WARM_AFTER_S)  # on a timer thread of its own

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.apps = dict(config.get("apps") or {})

    async def __call__(self, request: Request) -> Response:
        status, code, message = answer(request.url.path, self.apps)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else {}
        body = json.dumps({"error": {"code": code, "message": message}})
        return Response(body, status, headers=headers, media_type="application/json")
