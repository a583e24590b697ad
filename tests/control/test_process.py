"""kiln up --detach says what the background control plane does while the caller waits."""

from pathlib import Path

from kiln.control.process import _follow


def test_the_logs_new_whole_lines_are_said_once_and_a_half_line_waits(tmp_path: Path) -> None:
    log = tmp_path / "kiln.log"
    log.write_text("an older run\n")
    said: list[str] = []
    offset = log.stat().st_size
    with log.open("a") as out:
        out.write("-----> Starting Ray (single node, loopback)\n\n-----> Apps are ser")
    offset = _follow(log, offset, said.append)
    assert said == ["-----> Starting Ray (single node, loopback)"]
    with log.open("a") as out:
        out.write("ved at http://127.0.0.1:8000/<app>/\n")
    _follow(log, offset, said.append)
    assert said[1:] == ["-----> Apps are served at http://127.0.0.1:8000/<app>/"]
