"""App logs stay bounded: they rotate, and readers read only what they show."""

import time
from pathlib import Path

from kiln.models import LogRecord, LogSource
from kiln.run.logs import append_records, last_records, log_files, records_since


def line(ts: float, text: str, source: LogSource = LogSource.DYNO) -> LogRecord:
    return LogRecord(ts=ts, source=source, process="dyno.a", line=text)


def test_a_log_rotates_past_its_size_and_keeps_so_many_files(tmp_path: Path) -> None:
    for batch in range(40):
        append_records(tmp_path, "app", [line(batch + i / 100, "x" * 200) for i in range(10)],
                       max_bytes=8192, keep=2)  # fmt: skip
    append_records(tmp_path, "app", [line(99, "last")], max_bytes=8192, keep=2)
    files = log_files(tmp_path, "app")
    assert [p.name for p in files] == ["app.jsonl", "app.jsonl.1", "app.jsonl.2"]
    assert all(p.stat().st_size <= 8192 + 3000 for p in files)


def test_the_last_lines_come_from_the_end_and_across_a_rotation(tmp_path: Path) -> None:
    append_records(tmp_path, "app", [line(i, f"old {i}") for i in range(5)])
    (tmp_path / "app.jsonl").rename(tmp_path / "app.jsonl.1")
    append_records(tmp_path, "app", [line(10 + i, f"new {i}") for i in range(3)])
    assert [r.line for r in last_records(tmp_path, "app", 4)] == [
        "old 4",
        "new 0",
        "new 1",
        "new 2",
    ]
    routers = last_records(tmp_path, "app", 5, lambda r: r.source is LogSource.ROUTER)
    assert routers == []


def test_a_window_is_read_without_the_rest(tmp_path: Path) -> None:
    now = time.time()
    append_records(tmp_path, "app", [line(now - 3600 + i, "old") for i in range(1000)])
    append_records(tmp_path, "app", [line(now - 5 + i, "recent") for i in range(5)])
    assert [r.line for r in records_since(tmp_path, "app", now - 10)] == ["recent"] * 5


def test_a_line_names_the_node_it_came_from() -> None:
    from kiln.cli.logs import format_record
    from kiln.models import LogRecord

    line = LogRecord(ts=0, source="dyno", process="dyno.ab12", line="hi", node="gpu-2")
    assert format_record(line).endswith(" dyno[dyno.ab12@gpu-2]: hi")
    assert format_record(line.model_copy(update={"node": None})).endswith(" dyno[dyno.ab12]: hi")
