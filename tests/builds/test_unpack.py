"""Hostile archives, from the attacker's side: nothing may land outside the build directory, and
a refused archive names the member and why, and leaves nothing behind."""

import io
import lzma
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.builds.source import extract, pack
from kiln.builds.unpack import SourceLimits, unpack
from kiln.errors import InvalidInput

Crafter = Callable[..., Path]


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return member(name), data


def link(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    return member(name, tarfile.SYMTYPE, target), None


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    return member(name, tarfile.LNKTYPE, target), None


def special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    return member(name, kind), None


def directory(name: str) -> tuple[tarfile.TarInfo, None]:
    return member(name, tarfile.DIRTYPE), None


def everything_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture
def jail(tmp_path: Path) -> Path:
    """The build directory, two levels below a folder the attacker would love to write to."""
    dest = tmp_path / "outside" / "build" / "source"
    dest.mkdir(parents=True)
    return dest


def assert_refused(
    archive: Path, jail: Path, message: str, limits: SourceLimits | None = None
) -> None:
    with pytest.raises(InvalidInput) as caught:
        unpack(archive, jail, limits or SourceLimits())
    assert message in caught.value.message, caught.value.message
    assert everything_under(jail) == set(), "a refused archive left files behind"
    assert everything_under(jail.parent.parent) == {"build", "build/source"}, "wrote outside"


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([file("/etc/cron.d/evil")], "'/etc/cron.d/evil' is an absolute path"),
        ([file("../../evil.py")], "points outside the app (..)"),
        ([file("a/../../evil.py")], "points outside the app (..)"),
        ([link("link", "/etc/passwd")], "is a link to '/etc/passwd', outside the app"),
        ([link("sub/link", "../../x")], "is a link to '../../x', outside the app"),
        ([link("up", "..")], "is a link to '..', outside the app"),
        # A chain: each link alone stays inside; followed as the kernel does, s/.. is the parent
        # of the build directory.
        ([link("s", "."), link("a", "s/../x")], "'a' is a link to 's/../x', outside the app"),
        # The same, with the link named before the one it goes through.
        ([link("a", "s/../x"), link("s", ".")], "'a' is a link to 's/../x', outside the app"),
        ([link("deep", "a/b/c"), link("a/b/c", "../../.."), ], "outside the app"),
        ([link("loop1", "loop2/x"), link("loop2", "loop1")], "a loop of links"),
        # Writing through a link, even one that stays inside, is never done.
        ([link("d", "sub"), directory("sub"), file("d/x")], "lies under 'd', a link"),
        ([link("here", "."), file("here/here/x")], "lies under 'here', a link"),
        ([file("f"), file("f/x")], "lies under 'f', a file"),
        ([file("x"), link("x", "/etc/shadow")], "'x' appears twice"),
        ([hard("hard", "../outside")], "points outside the app"),
        ([hard("hard", "/etc/passwd")], "is an absolute path"),
        ([hard("hard", "later")], "not a file earlier in the app"),
        ([link("l", "f"), file("f"), hard("h", "l")],
         "'h' is a hard link to 'l', not a file earlier in the app"),
        ([special("dev", tarfile.CHRTYPE)], "'dev' is a device file or FIFO"),
        ([special("disk", tarfile.BLKTYPE)], "is a device file or FIFO"),
        ([special("pipe", tarfile.FIFOTYPE)], "is a device file or FIFO"),
        ([file("bad\nname.py")], "has a control character in its name"),
        ([file("x" * 300)], "has a name part longer than 255 bytes"),
        ([file("/".join(["d" * 200] * 25))], "has a path longer than 4096 bytes"),
    ],
)  # fmt: skip
def test_unsafe_members_refuse_the_whole_archive(
    craft_archive: Crafter,
    jail: Path,
    members: list[tuple[tarfile.TarInfo, bytes | None]],
    message: str,
) -> None:
    assert_refused(craft_archive(file("main.py", b"app = 1\n"), *members), jail, message)


def test_long_paths_that_defeat_realpath_are_refused(tmp_path: Path, jail: Path) -> None:
    """Directories of 247-character names reached through one-letter links make a path longer
    than PATH_MAX, where realpath stops resolving: tarfile's own filter then lets a link out."""
    archive = tmp_path / "realpath.tar.gz"
    component, steps = "d" * 247, "abcdefghijklmnop"
    with tarfile.open(archive, "w:gz") as tar:
        real = short = ""
        for step in steps:
            tar.addfile(member(f"{real}/{component}".lstrip("/"), tarfile.DIRTYPE))
            tar.addfile(member(f"{short}/{step}".lstrip("/"), tarfile.SYMTYPE, component))
            real, short = f"{real}/{component}".lstrip("/"), f"{short}/{step}".lstrip("/")
        long_link = "/".join(steps) + "/" + "l" * 254
        tar.addfile(member(long_link, tarfile.SYMTYPE, "../" * len(steps)))
        tar.addfile(member("escape", tarfile.SYMTYPE, long_link + "/../" * 2))
        pwned = member("escape/pwned")
        pwned.size = 6
        tar.addfile(pwned, io.BytesIO(b"owned\n"))
    assert_refused(archive, jail, "lies under 'a', a link")


def test_every_member_counts_against_the_limit(craft_archive: Crafter, jail: Path) -> None:
    archive = craft_archive(*[directory(f"d{i}") for i in range(6)])
    assert_refused(archive, jail, "more than 5 members (files, directories and links)",
                   SourceLimits(max_members=5))  # fmt: skip


def test_the_size_limit_names_the_member_that_crossed_it(
    craft_archive: Crafter, jail: Path
) -> None:
    archive = craft_archive(file("main.py", b"a" * 2**20), file("weights.bin", b"b" * 2 * 2**20))
    assert_refused(archive, jail, "over the limit of 2 MiB uncompressed at 'weights.bin'",
                   SourceLimits(max_bytes=2 * 2**20))  # fmt: skip


def test_a_compression_bomb_is_stopped_early(tmp_path: Path, jail: Path) -> None:
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=9) as tar:
        zeros = member("zeros.bin")
        zeros.size = 256 * 2**20
        tar.addfile(zeros, io.BytesIO(bytes(zeros.size)))
    assert archive.stat().st_size < 2**20
    assert_refused(archive, jail, "inflates more than 200 times",
                   SourceLimits(ratio_floor=4 * 2**20))  # fmt: skip


def test_a_giant_long_name_record_is_refused_before_it_is_read(tmp_path: Path, jail: Path) -> None:
    """A GNU long-name record is read whole, at the size its header claims."""
    archive = tmp_path / "longname.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(member("n" * (2 * 2**20)), io.BytesIO(b""))
    assert_refused(archive, jail, "a header record claims")


def test_an_archive_that_is_not_one(tmp_path: Path, jail: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8bthis is not gzip")
    assert_refused(junk, jail, "not a complete archive")


def test_safe_links_and_hard_links_are_kept(craft_archive: Crafter, jail: Path) -> None:
    archive = craft_archive(
        file("conf/base.toml", b"a = 1\n"),
        link("current.toml", "conf/base.toml"),
        link("conf/self", "."),
        link("conf/up", "../conf/base.toml"),
        hard("copy.toml", "conf/base.toml"),
        directory("./"),
    )
    assert unpack(archive, jail, SourceLimits()) == 2
    assert (jail / "current.toml").read_text() == "a = 1\n"
    assert (jail / "conf" / "up").read_text() == "a = 1\n"
    assert (jail / "copy.toml").read_text() == "a = 1\n"
    assert (jail / "conf" / "self").readlink() == Path()


def test_plain_and_xz_archives_unpack(tmp_path: Path, jail: Path) -> None:
    plain = tmp_path / "app.tar"
    with tarfile.open(plain, "w") as tar:
        info = member("main.py")
        info.size = 8
        tar.addfile(info, io.BytesIO(b"app = 1\n"))
    xz = tmp_path / "app.tar.xz"
    xz.write_bytes(lzma.compress(plain.read_bytes()))
    for archive in (plain, xz):
        assert unpack(archive, jail, SourceLimits()) == 1
        (jail / "main.py").unlink()


def test_pack_keeps_files_that_are_hard_linked(tmp_path: Path, jail: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "a.py").write_text("x = 1\n")
    os.link(app / "a.py", app / "b.py")
    archive = tmp_path / "app.tar.gz"
    with archive.open("wb") as out:
        assert pack(app, out)[0] == 2
    assert extract(archive, jail, SourceLimits()) == 2
    assert (jail / "b.py").read_text() == "x = 1\n"
