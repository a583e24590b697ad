"""The baseline for the serving benchmark: the echo example as a plain Ray Serve deployment, with
the same ingress (HAProxy) as Kiln's apps, and no supervisor or dyno in between."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ray import serve


def build(args: dict[str, Any]) -> Any:
    sys.path.insert(0, args["app_dir"])
    from main import app as echo  # type: ignore[import-not-found]  # the example's FastAPI app

    @serve.deployment(name="bare", max_ongoing_requests=args.get("max_ongoing_requests", 8))
    @serve.ingress(echo)
    class Bare:
        pass

    return Bare.bind()  # type: ignore[attr-defined]


def app_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "examples" / "echo"
