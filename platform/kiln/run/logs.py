"""App logs: dyno output, router lines and release events, shipped by supervisors in batches to
one log sink actor (on the head node), which appends them to ``<log_dir>/<app>.jsonl``.

Each record: ``{"ts": 1764237000.1, "source": "dyno", "process": "dyno.ab12", "line": "..."}``.
"""

from __future__ import annotations

__all__ = ["LogShipper", "append_records", "read_records", "records_since"]

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kiln.models import LogRecord

SINK_NAME = "kiln-logs"
NAMESPACE = "kiln"


def app_log(directory: Path, app: str) -> Path:
    return directory / f"{app}.jsonl"


def append_records(directory: Path, app: str, records: list[LogRecord]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with app_log(directory, app).open("a", encoding="utf-8") as out:
        for record in records:
            out.write(record.model_dump_json() + "\n")


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
    """The app's records from ``since`` on, oldest first, reading the file backwards from its
    end: the work is the window's, not the whole log's. Replicas ship lines in batches, so the
    file is in time order only within ``slack_s``."""
    path = app_log(directory, app)
    if not path.exists():
        return []
    found: list[LogRecord] = []
    with path.open("rb") as file:
        end = file.seek(0, 2)
        tail = b""
        while end > 0:
            start = max(0, end - block)
            file.seek(start)
            chunk = file.read(end - start) + tail
            lines = chunk.split(b"\n")
            tail = lines.pop(0) if start > 0 else b""  # maybe cut: finished by the next block
            older = False
            for raw in reversed(lines):
                if not raw.strip():
                    continue
                try:
                    record = LogRecord.model_validate_json(raw)
                except ValueError:
                    continue
                if record.ts < since - slack_s:
                    older = True
                    break
                if record.ts >= since:
                    found.append(record)
            if older:
                break
            end = start
    return sorted(found, key=lambda r: r.ts)


def _sink_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class LogSink:
        def write(self, directory: str, app: str, records: list[dict[str, Any]]) -> None:
            append_records(Path(directory), app, [LogRecord.model_validate(r) for r in records])

    return LogSink


class LogShipper:
    """Buffers a replica's log lines and sends them to the sink every ``interval_s``."""

    def __init__(self, app: str, process: str, directory: str, interval_s: float = 0.25) -> None:
        self.app = app
        self.process = process
        self.directory = directory
        self.interval_s = interval_s
        self.release: int | None = None  # the release the replica's dyno runs, on every line
        self._buffer: list[dict[str, Any]] = []
        self._sink: Any = None
        self._task: asyncio.Task[None] | None = None

    def line(self, source: str, text: str) -> None:
        """Thread-safe enough: list.append is atomic; the flush swaps the list."""
        self._buffer.append({"ts": time.time(), "source": source, "process": self.process,
                             "line": text, "release": self.release})  # fmt: skip

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
