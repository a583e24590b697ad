"""Unpacking an untrusted source archive (an upload or a pushed commit) without trusting it.

    files = unpack(Path("upload.tar.gz"), Path("build/source"), SourceLimits())

Nothing here relies on ``tarfile``'s extraction filters or on ``realpath`` (which gives up on paths
past ``PATH_MAX`` and so lets crafted links through). Instead, an archive is read as a stream and
written through directory file descriptors opened with ``O_NOFOLLOW``, so no write ever follows a
link; and anything that cannot be proven to stay inside is refused:

- names must be relative, without ``..``, control characters, or parts past the OS's limits;
- no member may sit under a link (``dir -> elsewhere`` then ``dir/file``), or appear twice;
- only files, directories, symbolic links and hard links: no devices, FIFOs or sparse files;
- a hard link must name a regular file earlier in the archive;
- a symbolic link must be relative and resolve inside the app, following the archive's own links
  as the kernel would (chains, ``..`` after a link, loops);
- every member counts against the member limit, sizes are counted as the stream is read, and a
  decompression ratio cap stops bombs before they are inflated;
- header records (long names, pax headers) are capped before ``tarfile`` reads them into memory.

A refused archive leaves ``dest`` empty, and the error names the member and why.
"""

from __future__ import annotations

__all__ = ["SourceLimits", "unpack"]

import bz2
import contextlib
import gzip
import lzma
import os
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from kiln.errors import InvalidInput

_MAX_NAME = 4096  # bytes in a member's path (Linux's PATH_MAX)
_MAX_PART = 255  # bytes in one path component (NAME_MAX)
_MAX_HEADER_RECORD = 64 * 2**10  # a GNU long name or a pax header's body
_MAX_LINK_HOPS = 40  # symbolic links followed when resolving one (Linux's MAXSYMLINKS)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SourceLimits:
    """What one source archive may hold, uncompressed."""

    max_bytes: int = 2 * 2**30
    max_members: int = 100_000
    # Decompressed bytes per compressed byte, once past ``ratio_floor`` bytes: source code
    # compresses 3-10x; a bomb of zeros about 1000x.
    max_ratio: float = 200.0
    ratio_floor: int = 16 * 2**20


class Refused(InvalidInput):
    """The archive holds something that could reach outside the app, or is over a limit."""

    default_code = "unsafe_archive"


# -- reading: counted, capped streams ------------------------------------------------------------


class _Counted:
    """A read-only file object that counts the bytes read through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True


class _Inflated(_Counted):
    """The decompressed stream; refuses to go on past the ratio cap."""

    def __init__(self, raw: IO[bytes], compressed: _Counted, limits: SourceLimits) -> None:
        super().__init__(raw)
        self.compressed = compressed
        self.limits = limits

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        floor, ratio = self.limits.ratio_floor, self.limits.max_ratio
        if self.count > floor and self.count > ratio * max(self.compressed.count, 1):
            raise Refused(
                f"the source archive was refused: it inflates more than {ratio:g} times "
                f"({self.count / 2**20:.0f} MiB from {self.compressed.count / 2**10:.0f} KiB "
                "so far), which is what compression bombs do. Pack the app with kiln deploy",
                code="archive_bomb",
            )
        return data


def _decompressed(head: bytes, raw: Any) -> IO[bytes]:
    """The archive's tar stream, by its magic number: gzip, bzip2, xz or plain."""
    opened: Any = raw  # a plain tar (or not an archive at all: tarfile says so)
    if head.startswith(b"\x1f\x8b"):
        opened = gzip.GzipFile(fileobj=raw, mode="rb")
    elif head.startswith(b"BZh"):
        opened = bz2.BZ2File(raw)
    elif head.startswith(b"\xfd7zXZ\x00"):
        opened = lzma.LZMAFile(raw)  # noqa: SIM115 (holds no descriptor; the caller closes the file)
    return cast(IO[bytes], opened)


class _CappedTarInfo(tarfile.TarInfo):
    """Refuses long-name and pax records large enough to exhaust memory before tarfile reads
    them (it reads such a record whole, at the size its header claims)."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        records = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                   tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)  # fmt: skip
        if self.type in records and self.size > _MAX_HEADER_RECORD:
            raise Refused(
                f"the source archive was refused: a header record claims {self.size} bytes "
                f"(the limit is {_MAX_HEADER_RECORD}); no real path or attribute is that long"
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc,no-any-return]


# -- deciding: names, kinds, links ---------------------------------------------------------------


def _refuse(member: str, why: str) -> Refused:
    return Refused(
        f"the source archive was refused: {member!r} {why}. Deploy a directory whose files and "
        "links all stay inside it"
    )


def _parts(name: str) -> tuple[str, ...]:
    """A member's name as path components; ``()`` for the archive's root. Raises Refused."""
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _refuse(name, "is an absolute path")
    if len(name.encode(errors="surrogateescape")) > _MAX_NAME:
        raise _refuse(name[:80] + "...", f"has a path longer than {_MAX_NAME} bytes")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise _refuse(name, "has a control character in its name")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(name, "points outside the app (..)")
    for part in parts:
        if len(part.encode(errors="surrogateescape")) > _MAX_PART:
            raise _refuse(name[:80] + "...", f"has a name part longer than {_MAX_PART} bytes")
    return parts


class _Tree:
    """What has been unpacked so far: each path's kind, and each symbolic link's target."""

    def __init__(self) -> None:
        self.kinds: dict[tuple[str, ...], str] = {(): "dir"}
        self.links: dict[tuple[str, ...], str] = {}

    def add(self, name: str, parts: tuple[str, ...], kind: str) -> None:
        for depth in range(1, len(parts)):
            above = self.kinds.get(parts[:depth])
            if above is None:
                self.kinds[parts[:depth]] = "dir"
            elif above != "dir":
                raise _refuse(name, f"lies under {'/'.join(parts[:depth])!r}, a {above}")
        seen = self.kinds.get(parts)
        if seen is not None and not (seen == kind == "dir"):
            raise _refuse(name, "appears twice in the archive")
        self.kinds[parts] = kind

    def resolve(self, name: str, at: tuple[str, ...], target: str, hops: int = 0) -> list[str]:
        """Where a link in directory ``at`` pointing at ``target`` leads, as the kernel would
        walk it through this tree; refused if it leaves the app or loops."""
        if target.startswith("/"):
            raise _refuse(name, f"is a link to {target!r}, outside the app")
        here = list(at)
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not here:
                    raise _refuse(name, f"is a link to {target!r}, outside the app")
                here.pop()
                continue
            here.append(part)
            inner = self.links.get(tuple(here))
            if inner is not None:
                if hops >= _MAX_LINK_HOPS:
                    raise _refuse(name, "is a link in a loop of links")
                here = self.resolve(name, tuple(here[:-1]), inner, hops + 1)
        return here


# -- writing: through directory descriptors, never following a link --------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def _parent(root: int, parts: tuple[str, ...]) -> Iterator[int]:
    """A descriptor of the directory holding ``parts``, made as needed; each step refuses links."""
    fd = os.dup(root)
    try:
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def _write(root: int, parts: tuple[str, ...], member: tarfile.TarInfo, data: IO[bytes]) -> None:
    mode = 0o755 if member.mode & 0o111 else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with _parent(root, parts) as fd:
        out = os.open(parts[-1], flags, mode, dir_fd=fd)
    with os.fdopen(out, "wb") as file:
        left = member.size
        while left > 0:
            chunk = data.read(min(_CHUNK, left))
            if not chunk:
                raise tarfile.ReadError(f"unexpected end of data in {member.name!r}")
            file.write(chunk)
            left -= len(chunk)


def _mkdir(root: int, parts: tuple[str, ...]) -> None:
    with _parent(root, parts) as fd, contextlib.suppress(FileExistsError):
        os.mkdir(parts[-1], 0o755, dir_fd=fd)


def _symlink(root: int, parts: tuple[str, ...], target: str) -> None:
    with _parent(root, parts) as fd:
        os.symlink(target, parts[-1], dir_fd=fd)


def _hardlink(root: int, parts: tuple[str, ...], source: tuple[str, ...]) -> None:
    with _parent(root, source) as src, _parent(root, parts) as dst:
        os.link(source[-1], parts[-1], src_dir_fd=src, dst_dir_fd=dst, follow_symlinks=False)


# -- the whole: stream, check, write; then check every link against the finished tree -----------


def unpack(archive: Path, dest: Path, limits: SourceLimits) -> int:
    """Unpack ``archive`` (tar, gzip, bzip2 or xz) into the empty directory ``dest``; returns
    the number of regular files. Raises InvalidInput (``dest`` left empty) if it is refused."""
    root = os.open(dest, _DIR_FLAGS)
    try:
        with archive.open("rb") as raw:
            return _unpack(raw, root, limits)
    except (Refused, InvalidInput):
        _empty(dest)
        raise
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError) as exc:
        _empty(dest)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # Not an I/O error on the archive: the OS refused a write (a name, a link, a loop).
            raise Refused(
                f"the source archive was refused: it could not be unpacked safely "
                f"({os.strerror(exc.errno)})"
            ) from None
        raise InvalidInput(
            f"the upload is not a complete archive ({type(exc).__name__}: {exc}); it may have "
            "been cut off: run kiln deploy again",
            code="bad_archive",
        ) from None
    finally:
        os.close(root)


def _unpack(raw: IO[bytes], root: int, limits: SourceLimits) -> int:
    head = raw.read(6)
    raw.seek(0)
    compressed = _Counted(raw)
    stream = _Inflated(_decompressed(head, compressed), compressed, limits)
    tree = _Tree()
    members = size = files = 0
    with tarfile.open(fileobj=stream, mode="r|", tarinfo=_CappedTarInfo) as tar:  # type: ignore[call-overload]
        for member in tar:
            members += 1
            if members > limits.max_members:
                raise Refused(
                    f"the source has more than {limits.max_members} members (files, directories "
                    "and links); add what the app does not need to .kilnignore",
                    code="source_too_large",
                )
            parts = _parts(member.name)
            if not parts:  # the archive's root ("./")
                if not member.isdir():
                    raise _refuse(member.name, "is the app's root, but not a directory")
                continue
            if member.isdir():
                tree.add(member.name, parts, "dir")
                _mkdir(root, parts)
            elif member.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE):
                size += member.size
                if size > limits.max_bytes:
                    raise Refused(
                        f"the source is over the limit of {limits.max_bytes / 2**20:.0f} MiB "
                        f"uncompressed at {member.name!r} ({member.size / 2**20:.0f} MiB). Keep "
                        "weights and data out of the source (.kilnignore): models are fetched at "
                        "release time",
                        code="source_too_large",
                    )
                tree.add(member.name, parts, "file")
                data = tar.extractfile(member)
                assert data is not None
                _write(root, parts, member, data)
                files += 1
            elif member.issym():
                if not member.linkname or "\0" in member.linkname:
                    raise _refuse(member.name, "is a link with no target")
                tree.add(member.name, parts, "link")
                tree.links[parts] = member.linkname
                _symlink(root, parts, member.linkname)
            elif member.islnk():
                source = _parts(member.linkname)
                if tree.kinds.get(source) != "file":
                    raise _refuse(
                        member.name,
                        f"is a hard link to {member.linkname!r}, not a file earlier in the app",
                    )
                tree.add(member.name, parts, "file")
                _hardlink(root, parts, source)
                files += 1
            elif member.type == tarfile.GNUTYPE_SPARSE:
                raise _refuse(member.name, "is a sparse file")
            else:
                raise _refuse(member.name, "is a device file or FIFO")
    # Links may name members that come after them: judge each against the finished tree.
    for parts, target in tree.links.items():
        tree.resolve("/".join(parts), parts[:-1], target)
    return files


def _empty(dest: Path) -> None:
    """Remove everything under ``dest`` (never following links), keeping ``dest`` itself."""
    for entry in os.scandir(dest):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
