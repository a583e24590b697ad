"""Source upload: pack honours ignore files; extract refuses unsafe or oversized archives."""

import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.build.source import SourceLimits, extract, tree_digest
from kiln.errors import InvalidInput
from tests.support.apps import APPS

Crafter = Callable[..., Path]


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def files_in(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


def test_pack_and_extract_honour_kilnignore(
    archive_of: Callable[[Path], Path], tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    extract(archive_of(APPS / "ignore_files"), dest, SourceLimits())
    # .kilnignore wins over .dockerignore: data/ and *.bin are out, keep.bin is back in, src/ stays.
    assert files_in(dest) == {
        ".dockerignore", ".kilnignore", "keep.bin", "main.py", "requirements.txt", "src/code.py",
    }  # fmt: skip


def test_extract_applies_the_archives_own_ignore_rules(
    craft_archive: Crafter, tmp_path: Path
) -> None:
    archive = craft_archive(
        (member(".kilnignore"), b"*.ckpt\n"), (member("main.py"), b"app = 1\n"),
        (member("model.ckpt"), b"weights"), (member(".git/HEAD"), b"ref"),
    )  # fmt: skip
    dest = tmp_path / "out"
    dest.mkdir()
    assert extract(archive, dest, SourceLimits()) == 2
    assert files_in(dest) == {".kilnignore", "main.py"}


@pytest.mark.parametrize(
    ("bad", "message"),
    [(member("/etc/cron.d/evil"), "'/etc/cron.d/evil' is an absolute path"),
     (member("../../evil.py"), "'../../evil.py' points outside the app"),
     (member("a/../../evil.py"), "points outside the app"),
     (member("link", tarfile.SYMTYPE, "/etc/passwd"), "is a link to '/etc/passwd', outside the app"),
     (member("sub/link", tarfile.SYMTYPE, "../../x"), "is a link to '../../x', outside the app"),
     (member("hard", tarfile.LNKTYPE, "../outside"), "outside the app"),
     (member("dev", tarfile.CHRTYPE), "'dev' is a device file or FIFO"),
     (member("pipe", tarfile.FIFOTYPE), "is a device file or FIFO")],
)  # fmt: skip
def test_unsafe_members_refuse_the_whole_archive(
    craft_archive: Crafter, tmp_path: Path, bad: tarfile.TarInfo, message: str
) -> None:
    data = b"x" if bad.type == tarfile.REGTYPE else None
    archive = craft_archive((member("main.py"), b"app = 1\n"), (bad, data))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(InvalidInput, match="the source archive was refused") as caught:
        extract(archive, dest, SourceLimits())
    assert message in caught.value.message
    assert files_in(dest) == set()  # nothing written, not even the good file
    assert not (tmp_path / "evil.py").exists()


def test_links_inside_the_app_are_kept(craft_archive: Crafter, tmp_path: Path) -> None:
    archive = craft_archive(
        (member("conf/base.toml"), b"a = 1\n"),
        (member("current.toml", tarfile.SYMTYPE, "conf/base.toml"), None),
    )
    dest = tmp_path / "out"
    dest.mkdir()
    extract(archive, dest, SourceLimits())
    assert (dest / "current.toml").read_text() == "a = 1\n"


def test_the_symlink_escape_fixture_is_refused(
    archive_of: Callable[[Path], Path], tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(
        InvalidInput, match=r"'secrets.txt' is a link to '(\.\./)+etc/passwd', outside the app"
    ):
        extract(archive_of(APPS / "symlink_escape"), dest, SourceLimits())


def test_huge_files_are_refused_naming_the_largest(
    tmp_path: Path, archive_of: Callable[[Path], Path]
) -> None:
    app = tmp_path / "huge_file"
    app.mkdir()
    (app / "main.py").write_text("app = 1\n")
    (app / "weights.safetensors").write_bytes(b"\0" * (3 * 2**20))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(InvalidInput) as caught:
        extract(archive_of(app), dest, SourceLimits(max_bytes=2 * 2**20))
    assert (
        "over the limit of 2 MiB (largest file: weights.safetensors, 3 MiB)" in caught.value.message
    )
    assert files_in(dest) == set()


def test_too_many_files(craft_archive: Crafter, tmp_path: Path) -> None:
    archive = craft_archive(*[(member(f"f{i}.py"), b"") for i in range(6)])
    with pytest.raises(InvalidInput, match="the source has 6 files, over the limit of 5"):
        extract(archive, tmp_path, SourceLimits(max_files=5))


def test_a_cut_off_upload_is_reported_as_incomplete(
    archive_of: Callable[[Path], Path], tmp_path: Path
) -> None:
    whole = archive_of(APPS / "model_class").read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(InvalidInput, match=r"not a complete \.tar\.gz archive"):
        extract(cut, dest, SourceLimits())
    assert files_in(dest) == set()


def test_not_an_archive_at_all(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not gzip")
    with pytest.raises(InvalidInput, match=r"not a complete \.tar\.gz archive"):
        extract(junk, tmp_path, SourceLimits())


def test_tree_digest_follows_content_and_names_only(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        root.mkdir()
        (root / "main.py").write_text("app = 1\n")
    assert tree_digest(a) == tree_digest(b)
    (b / "main.py").write_text("app = 2\n")
    assert tree_digest(a) != tree_digest(b)
