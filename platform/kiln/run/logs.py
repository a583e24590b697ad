"""App logs: dyno output, router lines and release events, shipped by supervisors in batches to
one log sink actor (on the head node), which appends them to ``<log_dir>/<app>.jsonl``.

Each record: ``{"ts": 1764237000.1, "source": "dyno", "process": "dyno.ab12", "line": "..."}``.
"""

from __future__ import annotations

__all__ = [
    "LogShipper",
    "append_records",
    "last_records",
    "log_files",
    "read_records",
    "records_since",
]

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kiln.models import LogRecord

SINK_NAME = "kiln-logs"
NAMESPACE = "kiln"


def app_log(directory: Path, app: str) -> Path:
    return directory / f"{app}.jsonl"


def log_files(directory: Path, app: str) -> list[Path]:
    """The app's log, newest first: ``app.jsonl``, then its rotated ``app.jsonl.1``, ``.2``..."""
    current = app_log(directory, app)
    rotated = sorted(directory.glob(f"{current.name}.*"),
                     key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 1 << 30)  # fmt: skip
    return [current, *rotated] if current.exists() else rotated


def append_records(
    directory: Path, app: str, records: list[LogRecord], *, max_bytes: int | None = None,
    keep: int | None = None,
) -> None:  # fmt: skip
    """Append to the app's log; past ``max_bytes`` it rotates, keeping ``keep`` old files
    (defaults: KILN_LOG_MAX_BYTES, KILN_LOG_KEEP in this process's environment)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = app_log(directory, app)
    with path.open("a", encoding="utf-8") as out:
        for record in records:
            out.write(record.model_dump_json() + "\n")
        size = out.tell()
    limit = (
        max_bytes
        if max_bytes is not None
        else int(os.environ.get("KILN_LOG_MAX_BYTES", 20 * 2**20))
    )
    if size > limit:
        _rotate(path, keep if keep is not None else int(os.environ.get("KILN_LOG_KEEP", "3")))


def _rotate(path: Path, keep: int) -> None:
    for index in range(keep, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if index == keep:
            older.unlink(missing_ok=True)
        elif older.exists():
            older.rename(path.with_name(f"{path.name}.{index + 1}"))
    if keep > 0:
        path.rename(path.with_name(f"{path.name}.1"))
    else:
        path.unlink(missing_ok=True)


def last_records(
    directory: Path,
    app: str,
    count: int,
    keep: Callable[[LogRecord], bool] = lambda _r: True,
    block: int = 1 << 16,
) -> list[LogRecord]:
    """The app's last ``count`` records that ``keep`` accepts, oldest first, read backwards
    from the end (through rotated files when needed): the work is what is shown."""
    found: list[LogRecord] = []
    for record in _records_backwards(directory, app, block):
        if keep(record):
            found.append(record)
            if len(found) >= count:
                break
    return sorted(found, key=lambda r: r.ts)


def _records_backwards(directory: Path, app: str, block: int) -> Iterator[LogRecord]:
    """The app's records, last first, through its rotated files; a line cut short is skipped."""
    for path in log_files(directory, app):
        for raw in _backwards(path, block):
            try:
                yield LogRecord.model_validate_json(raw)
            except ValueError:
                continue


def _backwards(path: Path, block: int) -> Iterator[bytes]:
    """A file's lines, last first."""
    if not path.exists():
        return
    with path.open("rb") as file:
        end = file.seek(0, 2)
        tail = b""
        while end > 0:
            start = max(0, end - block)
            file.seek(start)
            lines = (file.read(end - start) + tail).split(b"\n")
            tail = lines.pop(0) if start > 0 else b""
            for raw in reversed(lines):
                if raw.strip():
                    yield raw
            end = start
        if tail.strip():
            yield tail


def read_records(directory: Path, app: str) -> Iterator[LogRecord]:
    path = app_log(directory, app)
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                yield LogRecord.model_validate_json(line)
            except ValueError:
                continue  # a line cut short by a crash


def records_since(
    directory: Path, app: str, since: float, block: int = 1 << 16, slack_s: float = 30.0
) -> list[LogRecord]:
    """The app's records from ``since`` on, oldest first, reading backwards from the end:
    the work is the window's, not the whole log's. Replicas ship lines in batches, so the
    file is in time order only within ``slack_s``."""
    found: list[LogRecord] = []
    for record in _records_backwards(directory, app, block):
        if record.ts < since - slack_s:
            break
        if record.ts >= since:
            found.append(record)
    return sorted(found, key=lambda r: r.ts)


def _sink_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class LogSink:
        def write(self, directory: str, app: str, records: list[dict[str, Any]]) -> None:
            # Each replica's batch is in time order; batches from nodes arrive as they come.
            append_records(Path(directory), app, [LogRecord.model_validate(r) for r in records])

    return LogSink


class LogShipper:
    """Buffers a replica's log lines and sends them to the sink every ``interval_s``."""

    def __init__(
        self, app: str, process: str, directory: str, interval_s: float = 0.25, *,
        node: str | None = None,
    ) -> None:  # fmt: skip
        self.app = app
        self.process = process
        self.node = node  # named on every line: a cluster's lines all reach the head's sink
        self.directory = directory
        self.interval_s = interval_s
        self.release: int | None = None  # the release the replica's dyno runs, on every line
        self._buffer: list[dict[str, Any]] = []
        self._sink: Any = None
        self._task: asyncio.Task[None] | None = None

    def line(self, source: str, text: str) -> None:
        """Thread-safe enough: list.append is atomic; the flush swaps the list."""
        self._buffer.append({"ts": time.time(), "source": source, "process": self.process,
                             "line": text, "release": self.release, "node": self.node})  # fmt: skip

    async def start(self) -> None:
        self._sink = (
            _sink_class()
            .options(
                name=SINK_NAME,
                namespace=NAMESPACE,
                lifetime="detached",
                get_if_exists=True,
                resources={"node:__internal_head__": 0.001},
            )
            .remote()
        )
        await asyncio.wait_for(self._sink.__ray_ready__.remote(), timeout=60)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.flush()

    def flush(self) -> None:
        if self._buffer and self._sink is not None:
            batch, self._buffer = self._buffer, []
            self._sink.write.remote(self.directory, self.app, batch)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.flush()
