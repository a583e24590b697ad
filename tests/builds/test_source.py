"""Source upload: pack honours ignore files, extract the archive's own; hostile archives are in
test_unpack.py."""

import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.builds.source import SourceLimits, extract, tree_digest
from kiln.errors import InvalidInput
from tests.builds.test_unpack import member
from tests.support.apps import APPS

Crafter = Callable[..., Path]


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


def test_a_cut_off_upload_is_reported_as_incomplete(
    archive_of: Callable[[Path], Path], tmp_path: Path
) -> None:
    whole = archive_of(APPS / "model_class").read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(InvalidInput, match=r"not a complete archive"):
        extract(cut, dest, SourceLimits())
    assert files_in(dest) == set()


def test_tree_digest_follows_content_and_names_only(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        root.mkdir()
        (root / "main.py").write_text("app = 1\n")
    assert tree_digest(a) == tree_digest(b)
    (b / "main.py").write_text("app = 2\n")
    assert tree_digest(a) != tree_digest(b)
