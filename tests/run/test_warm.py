"""Warm workers (kiln.run.warm): the tokens that tell a worker Ray started ahead of need to import
what a replica needs, and the count that keeps a node topped up. (Against a real raylet:
tests/e2e/test_scaling.py.)"""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.run import warm

IDLE = b"ray::IDLE\x00"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    made = tmp_path / "kiln-warm"
    made.mkdir(mode=0o700)
    return made


def titles(table: dict[int, bytes]) -> Callable[[int], bytes | None]:
    return table.get


def token(folder: Path, name: str, *, age_s: float = 0.0, content: bytes = b"") -> Path:
    path = folder / name
    path.write_bytes(content)
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def test_each_token_is_claimed_by_one_worker(folder: Path) -> None:
    token(folder, "want-a")
    token(folder, "want-b")
    assert warm.claim(folder, 101) and warm.claim(folder, 102)
    assert not warm.claim(folder, 103)  # none left: this worker imports nothing
    assert sorted(p.name for p in folder.iterdir()) == ["held-101", "held-102"]
    assert not warm.claim(folder / "missing", 104)


def test_a_worker_made_warm_is_marked_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token(tmp_path, "held-7")
    imported: list[str] = []
    monkeypatch.setattr(warm.importlib, "import_module", imported.append)
    warm.warm_up(tmp_path, 7)
    assert imported == list(warm.IMPORTS)
    assert (tmp_path / "held-7").read_bytes() == warm.READY


def test_the_count_keeps_what_still_waits_and_drops_the_rest(folder: Path) -> None:
    now = time.time()
    token(folder, "want-fresh")
    token(folder, "want-stale", age_s=warm.UNCLAIMED_S + 5)  # its worker never started
    token(folder, "held-10", content=warm.READY)  # idle and ready
    token(folder, "held-11")  # still importing
    token(folder, "held-12", content=warm.READY)  # something else runs on it now
    token(folder, "held-13", content=warm.READY)  # dead
    token(folder, "held-14", age_s=warm.UNCLAIMED_S + 5)  # stuck importing
    token(folder, "held-x")  # not a pid
    token(folder, "lock")
    shown = {10: IDLE, 11: b"python\x00default_worker.py", 12: b"ray::ServeReplica:a:dyno\x00",
             14: b"python\x00"}  # fmt: skip
    # On their way: the fresh token and the importing worker (the idle one counts apart).
    assert warm.waiting(folder, now, titles(shown)) == 2
    assert sorted(p.name for p in folder.iterdir()) == [
        "held-10", "held-11", "lock", "want-fresh",
    ]  # fmt: skip


def test_a_planted_link_is_not_counted_and_its_target_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    folder = tmp_path / "warm"
    folder.mkdir()
    (folder / "want-link").symlink_to(target)
    (folder / "held-10").symlink_to(target)
    assert warm.waiting(folder, time.time(), titles({10: IDLE})) == 0
    assert list(folder.iterdir()) == [] and target.read_text() == "keep me"


def test_a_top_up_asks_only_for_what_the_node_lacks(tmp_path: Path) -> None:
    folder = tmp_path / "warm"
    asked: list[int] = []
    assert warm.top_up(folder, 2, asked.append) == 2
    assert asked == [2] and len(list(folder.glob("want-*"))) == 2
    assert (folder.stat().st_mode & 0o777) == 0o700
    assert warm.top_up(folder, 2, asked.append) == 0  # both still waiting to be claimed
    assert warm.top_up(folder, 3, asked.append) == 1 and asked == [2, 1]
    assert warm.top_up(folder, 4, asked.append, idle=lambda: 1) == 0  # 3 coming, 1 idle
    assert warm.top_up(tmp_path / "none", 0, asked.append) == 0
    assert not (tmp_path / "none").exists()


def test_a_failed_ask_takes_its_tokens_back(tmp_path: Path) -> None:
    def refuse(count: int) -> None:
        raise RuntimeError("the raylet said no")

    with pytest.raises(RuntimeError, match="said no"):
        warm.top_up(tmp_path, 2, refuse)
    assert not list(tmp_path.glob("want-*"))  # no worker would find a stray token


def test_a_replica_takes_its_workers_mark(tmp_path: Path) -> None:
    token(tmp_path, "held-42", age_s=3, content=warm.READY)
    age = warm.taken(tmp_path, 42)
    assert age is not None and 2.5 < age < 10
    assert not (tmp_path / "held-42").exists()
    assert warm.taken(tmp_path, 42) is None and warm.taken(None, 42) is None


def test_the_wanted_count_comes_from_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(warm.WANTED, "3")
    assert warm.wanted() == 3
    monkeypatch.setenv(warm.WANTED, "-1")
    assert warm.wanted() == 0
    monkeypatch.setenv(warm.WANTED, "many")
    assert warm.wanted() == 1
    monkeypatch.setenv(warm.WANTED, "1000")
    assert warm.wanted() == 16


def test_idle_workers_are_the_raylets_children_titled_idle(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    for pid, parent, title in [(100, 7, b"ray::IDLE\x00"), (101, 7, b"ray::ServeReplica\x00"),
                               (102, 8, b"ray::IDLE\x00"), (103, 7, b"ray::IDLE   ")]:  # fmt: skip
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "stat").write_text(f"{pid} (ray::I) S {parent} 1 1 0 -1\n")
        (proc / str(pid) / "cmdline").write_bytes(title)
    (proc / "104").mkdir()  # gone while read
    (proc / "self").mkdir()
    assert warm.idle_workers(7, proc) == 2


def test_outside_ray_the_module_does_nothing_and_imports_no_ray() -> None:
    # Every worker of the cluster preloads it: a worker that claims no token pays for this only.
    code = (
        "import sys, kiln.run.warm as w; "
        "print(w.directory(), w.leave(0.0), "
        "any(m == 'ray' or m.startswith('ray.') for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    assert done.stdout.split() == ["None", "None", "False"]


def test_leaving_one_tops_the_node_up_later_on_a_thread(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []
    monkeypatch.setattr(warm, "directory", lambda: folder)
    monkeypatch.setattr(warm, "prestart", asked.append)
    monkeypatch.setattr(warm, "idle_workers", lambda raylet: 0)
    monkeypatch.setenv(warm.WANTED, "1")
    monkeypatch.setenv(warm.RAYLET_PID, "1")
    monkeypatch.setenv(warm.PRELOAD, "kiln.run.serve_fix,kiln.run.warm")
    timer = warm.leave(1.0)
    assert timer is not None and asked == []  # not at once: a replica is starting
    timer.join(10)
    assert asked == [1] and len(list(folder.glob("want-*"))) == 1
    monkeypatch.setenv(warm.WANTED, "0")
    assert warm.leave(0.0) is None
    # A node whose workers do not preload the module: a prestarted worker would claim nothing.
    monkeypatch.setenv(warm.WANTED, "1")
    monkeypatch.setenv(warm.PRELOAD, "kiln.run.serve_fix")
    assert warm.leave(0.0) is None


def test_a_raylet_that_refuses_costs_a_warning_not_the_replica(
    folder: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(count: int) -> None:
        raise RuntimeError("UNAUTHENTICATED")

    monkeypatch.setattr(warm, "directory", lambda: folder)
    monkeypatch.setattr(warm, "prestart", refuse)
    monkeypatch.setattr(warm, "idle_workers", lambda raylet: 0)
    monkeypatch.setenv(warm.RAYLET_PID, "1")
    monkeypatch.setenv(warm.PRELOAD, "kiln.run.warm")
    timer = warm.leave(0.0)
    assert timer is not None
    timer.join(10)
    assert "could not start a warm worker on this node: UNAUTHENTICATED" in caplog.text
    assert not list(folder.glob("want-*"))
