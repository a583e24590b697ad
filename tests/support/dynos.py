"""Starting a built artifact directly, as a test (the run stage's supervisor does this for real)."""

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from kiln.engine import DockerEngine
from kiln.models import Artifact
from tests.conftest import free_port

# Run by an artifact's Python: the modules its dyno imports (Kiln's runtime, the app's
# packages) that would be compiled at each start, for want of bytecode next to them.
UNCOMPILED = """
import importlib.util, os, sys
import fastapi, uvicorn, kiln_runtime.python.server
ours = (sys.prefix, os.path.dirname(os.path.dirname(kiln_runtime.__file__)))
print(sorted(name for name, module in list(sys.modules.items())
             if (getattr(module, "__file__", None) or "").endswith(".py")
             and module.__file__.startswith(ours)
             and not os.path.exists(importlib.util.cache_from_source(module.__file__))))
"""


def wait_healthy(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never became healthy")


@contextmanager
def run_slug(artifact: Artifact) -> Iterator[str]:
    """Run a slug as a process on a free loopback port; yields its URL."""
    port = free_port()
    env = {**os.environ, **artifact.env, "PORT": str(port), "HOST": "127.0.0.1"}
    process = subprocess.Popen(artifact.command, cwd=Path(artifact.reference) / "app", env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextmanager
def run_image(engine: DockerEngine, artifact: Artifact) -> Iterator[str]:
    """Run an image as `docker run -p PORT:8080 IMAGE` would; yields its URL."""
    port = free_port()
    container = engine.client.containers.run(
        artifact.reference, detach=True, ports={"8080/tcp": ("127.0.0.1", port)}
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        yield url
    finally:
        container.remove(force=True)
