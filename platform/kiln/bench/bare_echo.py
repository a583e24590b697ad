"""The baseline for the serving benchmark: the echo example as a plain Ray Serve deployment, with
the same ingress (HAProxy) as Kiln's apps, and no supervisor or dyno in between."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ray import serve


def build(args: dict[str, Any]) -> Any:
    directory = args["app_dir"]

    def echo_app() -> Any:  # runs in each replica: import the example there
        sys.path.insert(0, directory)
        from main import app  # type: ignore[import-not-found]  # the example's FastAPI app

        return app

    @serve.deployment(name="bare", max_ongoing_requests=args.get("max_ongoing_requests", 8))
    @serve.ingress(echo_app)
    class Bare:
        pass

    return Bare.bind()  # type: ignore[attr-defined]


def app_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "examples" / "echo"
