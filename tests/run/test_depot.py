"""Artifacts travel to other nodes as tar streams with a trailing digest: what arrives is the
same tree (owners, modes, hard and symbolic links), all or nothing, fetched once per node."""

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kiln.run.depot import COMPLETE, TransferFailed, complete, fetch, pack, receive

APP_UID = 200_123


def slug_like(root: Path) -> Path:
    slug = root / "app.7" / "slugs" / "abc123"
    (slug / "app" / "pkg").mkdir(parents=True)
    (slug / "app" / "main.py").write_text("app = 1\n")
    (slug / "app" / "pkg" / "big.bin").write_bytes(os.urandom(9 * 2**20))
    os.link(slug / "app" / "pkg" / "big.bin", slug / "app" / "pkg" / "same.bin")
    (slug / "app" / "python").symlink_to("/usr/bin/python3")
    (slug / "app" / "run.sh").write_text("#!/bin/sh\n")
    (slug / "app" / "run.sh").chmod(0o750)
    (slug / "app" / "main.py").chmod(0o640)
    if os.geteuid() == 0:
        os.lchown(slug / "app" / "main.py", 0, APP_UID)
    (slug / COMPLETE).touch()
    return slug


async def stream(items: list[bytes | dict[str, Any]]) -> AsyncIterator[bytes | dict[str, Any]]:
    for item in items:
        yield item


def test_a_slug_arrives_as_it_was_made(tmp_path: Path) -> None:
    head, node = tmp_path / "head", tmp_path / "node"
    slug = slug_like(head)
    chunks = list(pack(slug, [head]))
    assert isinstance(chunks[-1], dict) and len(chunks) > 2  # several chunks, then the digest
    target = node / "app.7" / "slugs" / "abc123"
    size = asyncio.run(receive(stream(chunks), target))
    assert size == chunks[-1]["bytes"] and complete(target)
    app = target / "app"
    assert (app / "pkg" / "big.bin").read_bytes() == (slug / "app" / "pkg" / "big.bin").read_bytes()
    assert (app / "pkg" / "big.bin").stat().st_ino == (app / "pkg" / "same.bin").stat().st_ino
    assert (app / "python").readlink() == Path("/usr/bin/python3")
    assert (app / "run.sh").stat().st_mode & 0o777 == 0o750
    assert (app / "main.py").stat().st_mode & 0o777 == 0o640
    if os.geteuid() == 0:
        assert (app / "main.py").stat().st_gid == APP_UID
    assert [p.name for p in target.parent.iterdir()] == ["abc123"]  # no staging left


class SlowToExit(subprocess.Popen[bytes]):
    """tar as a loaded machine sees it: its output has ended, the process has not yet."""

    def __init__(self, args: list[str], **kwargs: Any) -> None:
        script = '"$@"; code=$?; exec >&-; sleep 0.5; exit $code'
        super().__init__(["sh", "-c", script, "sh", *args], **kwargs)


def test_a_tar_still_exiting_after_its_last_chunk_is_a_sound_transfer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = tmp_path / "head"
    monkeypatch.setattr("kiln.run.depot.subprocess.Popen", SlowToExit)
    chunks = list(pack(slug_like(head), [head]))
    assert isinstance(chunks[-1], dict) and chunks[-1]["bytes"] > 9 * 2**20


def test_a_reader_that_stops_early_leaves_no_tar_behind(tmp_path: Path) -> None:
    head = tmp_path / "head"
    chunks = pack(slug_like(head), [head])
    next(chunks)
    chunks.close()  # the node went away mid-transfer
    assert not [p for p in Path("/proc").glob("[0-9]*") if _tar_of(p, head)]


def _tar_of(proc: Path, head: Path) -> bool:
    try:
        return str(head) in (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


@pytest.mark.parametrize("damage", ["flipped", "cut", "lied"])
def test_a_damaged_or_cut_transfer_leaves_nothing_to_start_from(
    tmp_path: Path, damage: str
) -> None:
    head = tmp_path / "head"
    chunks = list(pack(slug_like(head), [head]))
    if damage == "flipped":
        first = bytearray(chunks[1])  # type: ignore[arg-type]
        first[100] ^= 0xFF
        chunks[1] = bytes(first)
    elif damage == "cut":
        chunks = chunks[:-2]
    else:
        chunks[-1] = {"sha256": "0" * 64, "bytes": chunks[-1]["bytes"]}  # type: ignore[index]
    target = tmp_path / "node" / "abc123"
    with pytest.raises(TransferFailed, match="damaged" if damage != "cut" else "was cut"):
        asyncio.run(receive(stream(chunks), target))
    assert list(target.parent.iterdir()) == []


def test_the_depot_sends_only_real_directories_inside_its_roots(tmp_path: Path) -> None:
    head = tmp_path / "head"
    slug = slug_like(head)
    (head / "link").symlink_to(slug)
    outside = tmp_path / "secret"
    outside.mkdir()
    for path, why in [
        (outside, "outside what the depot sends"),
        (head / "link", "not a directory"),
        (head / "app.7" / ".." / "app.7", "without '..'"),
        (head, "outside"),  # the root itself: every app's sandbox at once
        (Path("relative"), "absolute"),
    ]:
        with pytest.raises(TransferFailed, match=why):
            next(iter(pack(path, [head])))


def test_one_fetch_per_node_and_path_the_rest_find_it_there(tmp_path: Path) -> None:
    head, node = tmp_path / "head", tmp_path / "node"
    slug = slug_like(head)
    sent: list[Path] = []

    async def source(path: Path, roots: list[Path]) -> AsyncIterator[bytes | dict[str, Any]]:
        sent.append(path)
        for item in pack(slug, [head]):
            await asyncio.sleep(0.01)
            yield item

    target = node / "app.7" / "slugs" / "abc123"
    said: list[str] = []

    async def three() -> list[Any]:
        return await asyncio.gather(*[
            fetch(target, [head], present=complete, say=said.append, source=source)
            for _ in range(3)
        ])  # fmt: skip

    results = asyncio.run(three())
    assert len(sent) == 1 and sum(r is not None for r in results) == 1
    assert complete(target) and said == [f"fetching {target} from the head"]
    assert (
        asyncio.run(fetch(target, [head], present=complete, say=said.append, source=source)) is None
    )


def test_a_model_folder_gains_a_revision_without_touching_files_in_use(tmp_path: Path) -> None:
    head, node = tmp_path / "head", tmp_path / "node"
    folder = head / "models--org--tiny"
    for commit, blob in (("a" * 40, "blob-a"), ("b" * 40, "blob-b")):
        (folder / "snapshots" / commit).mkdir(parents=True)
        (folder / "blobs").mkdir(exist_ok=True)
        (folder / "blobs" / blob).write_text(blob)
        (folder / "snapshots" / commit / "weights").symlink_to(f"../../blobs/{blob}")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("b" * 40)
    # The node has revision a, in use by a running dyno (its file must stay the same file).
    local = node / "models--org--tiny"
    (local / "snapshots" / ("a" * 40)).mkdir(parents=True)
    (local / "blobs").mkdir()
    (local / "blobs" / "blob-a").write_text("blob-a")
    (local / "snapshots" / ("a" * 40) / "weights").symlink_to("../../blobs/blob-a")
    (local / "refs").mkdir()
    (local / "refs" / "main").write_text("a" * 40)
    in_use = (local / "blobs" / "blob-a").stat().st_ino

    def has_b(path: Path) -> bool:
        return (path / "snapshots" / ("b" * 40)).is_dir()

    async def source(path: Path, roots: list[Path]) -> AsyncIterator[bytes | dict[str, Any]]:
        for item in pack(folder, roots):
            yield item

    fetched = asyncio.run(fetch(local, [head], present=has_b, say=print, source=source))
    assert fetched is not None
    assert (local / "snapshots" / ("b" * 40) / "weights").read_text() == "blob-b"
    assert (local / "blobs" / "blob-a").stat().st_ino == in_use
    assert (local / "refs" / "main").read_text() == "b" * 40
