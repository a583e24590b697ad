"""A build's log in Heroku's shape: ``-----> `` steps, indented output, `` !     `` errors.

>>> log = BuildLog()
>>> log.step("Installing dependencies"); log.info("ok"); log.error("failed")
>>> log.text().splitlines()
['-----> Installing dependencies', '       ok', ' !     failed']
"""

from __future__ import annotations

__all__ = ["BuildFailed", "BuildLog"]

from collections.abc import Callable

from kiln.errors import KilnError


class BuildFailed(KilnError):
    """A build could not produce an artifact; the message is the cause, for the ` !` lines."""

    status = 422
    default_code = "build_failed"


class BuildLog:
    """Collects the lines of one build and passes each on, as it is written, to ``sink``."""

    def __init__(self, sink: Callable[[str], None] | None = None) -> None:
        self._lines: list[str] = []
        self._sink = sink

    def step(self, text: str) -> None:
        self._emit(f"-----> {text}")

    def info(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self._emit(f"       {line}".rstrip())

    def error(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self._emit(f" !     {line}".rstrip())

    def lines(self) -> list[str]:
        """The lines so far (a copy: the build goes on writing)."""
        return list(self._lines)

    def text(self) -> str:
        return "\n".join(self._lines) + ("\n" if self._lines else "")

    def _emit(self, line: str) -> None:
        self._lines.append(line)
        if self._sink is not None:
            self._sink(line)
