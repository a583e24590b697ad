"""Serve's ingress, HAProxy, as Kiln runs it: never a 404 for a URL only because no route is
built yet.

HAProxy listens on the platform's port as soon as Serve starts, seconds before any application's
route exists (each is built in a worker process of its own first; the front, ``kiln.route.front``,
too). Serve's config answers a request no route takes with its own 404, so a client calling a
known app right after ``kiln up`` was told it does not exist. Kiln points Serve at this wrapper
instead of the HAProxy binary (``RAY_SERVE_HAPROXY_BINARY_PATH``): it runs the real binary, same
process, on Serve's config with its default answer turned into a 503 with ``Retry-After`` in Kiln's
JSON (``platform_starting``), rewriting Serve's config in place under Serve's own lock. Once the
front holds ``/``, no request reaches that answer.

The wrapper runs as ``python -I -S <this file> REAL_BINARY ARGS...`` (only the standard library),
so a start or reload of HAProxy costs a few milliseconds more. Should Serve's config change shape
so that the 404 is not found, the config is left as Serve wrote it: the old behaviour.
"""

from __future__ import annotations

__all__ = ["RETRY_AFTER_S", "STARTING_CODE", "WRAPPER_NAME", "main", "rewrite", "write_wrapper"]

import fcntl
import json
import os
import shlex
import sys
from pathlib import Path

RETRY_AFTER_S = 2  # what a client is told to wait for an app that is coming back
STARTING_CODE = "platform_starting"
STARTING_MESSAGE = (
    f"the platform is starting and no app's route is ready yet; try again in {RETRY_AFTER_S}s"
)
# Serve's default backend: "http-request return status 404 ... not found. Ping ... routes."
_SERVES_404 = "http-request return status 404 "
WRAPPER_NAME = "kiln-haproxy"


def rewrite(config: str) -> str:
    """Serve's HAProxy config with its default backend's 404 turned into Kiln's 503."""
    body = json.dumps({"error": {"code": STARTING_CODE, "message": STARTING_MESSAGE}})
    quoted = '"' + body.replace("\\", "\\\\").replace('"', '\\"') + '"'
    ours = (
        f"http-request return status 503 content-type application/json string {quoted} "
        f"hdr Retry-After {RETRY_AFTER_S}"
    )
    lines = config.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.lstrip().startswith(_SERVES_404) and "not found" in line:
            indent = line[: len(line) - len(line.lstrip())]
            lines[index] = f"{indent}{ours}\n"
    return "".join(lines)


def write_wrapper(directory: Path, real_binary: str) -> Path:
    """The executable Serve is told to run as HAProxy, written in ``directory`` (private to the
    platform); it runs ``real_binary`` through :func:`main`."""
    wrapper = directory / WRAPPER_NAME
    script = (
        "#!/bin/sh\n# Written by Kiln (kiln.route.ingress): HAProxy on Serve's config, where a\n"
        "# request no route takes yet is answered 503 with Retry-After, not 404.\n"
        f"exec {shlex.quote(sys.executable)} -I -S {shlex.quote(str(Path(__file__)))} "
        f'{shlex.quote(real_binary)} "$@"\n'
    )
    if not wrapper.exists() or wrapper.read_text() != script:
        scratch = directory / f".kiln-haproxy.{os.getpid()}"
        scratch.write_text(script)
        scratch.chmod(0o700)
        scratch.rename(wrapper)
    return wrapper


def main(argv: list[str]) -> None:
    """``REAL_BINARY ARGS...``: rewrite the config ``-f`` names in place, then exec the real
    HAProxy with Serve's own arguments (the same process, the same ``-f``: Serve finds its
    HAProxy processes by that path in their command lines, and reloads and signals them)."""
    real, args = argv[0], list(argv[1:])
    for index, arg in enumerate(args[:-1]):
        if arg == "-f":
            try:
                _rewrite_in_place(Path(args[index + 1]))
            except OSError as exc:  # Serve's own config still serves; say why not ours
                print(f"kiln-haproxy: kept Serve's config: {exc}", file=sys.stderr, flush=True)
    os.execv(real, [real, *args])  # noqa: S606 - the binary Serve resolved, with Serve's arguments


def _rewrite_in_place(config: Path) -> None:
    """Under the lock Serve writes the config with (``CONFIG.lock``), replace it atomically by
    its rewritten text, unless there is nothing to rewrite."""
    with Path(f"{config}.lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        text = config.read_text()
        rewritten = rewrite(text)
        if rewritten == text:
            return
        scratch = config.with_name(f".{config.name}.kiln.{os.getpid()}")
        scratch.write_text(rewritten)
        scratch.replace(config)


if __name__ == "__main__":
    main(sys.argv[1:])
