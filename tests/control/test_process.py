"""kiln up --detach says what the background control plane does while the caller waits."""

from pathlib import Path

from kiln.control.process import _back, _follow


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


def test_kiln_up_waits_for_the_apps_it_brings_back_only_when_there_are_some() -> None:
    assert _back(["-----> Starting Ray (single node, loopback)"])  # a fresh home: nothing to wait
    bringing = ["-----> Bringing back 2 app(s): chat, web"]
    assert not _back(bringing)
    assert _back([*bringing, "-----> Every app serves again (2, 9.1s after the start)"])
    assert _back([*bringing, "-----> Not every app serves: 1 of 2 apps serve again (...)"])
