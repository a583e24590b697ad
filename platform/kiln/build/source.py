"""An app's source on its way in: packed by the CLI honouring ignore files, extracted by the
server without trusting the archive, and digested.

Extraction refuses (and writes nothing for) absolute paths, ``..``, links pointing outside the app,
device files and FIFOs, and archives past the size or file-count limit.
"""

from __future__ import annotations

__all__ = ["SourceLimits", "extract", "ignore_spec", "pack", "tree_digest"]

import hashlib
import io
import os
import posixpath
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pathspec

from kiln.errors import InvalidInput

IGNORE_FILES = (".kilnignore", ".dockerignore")
# Never part of an app's source: VCS data, local environments, caches.
ALWAYS_IGNORED = [".git/", ".hg/", ".venv/", "venv/", "__pycache__/", "*.pyc", ".mypy_cache/",
                  ".pytest_cache/", ".ruff_cache/", ".kiln/", "node_modules/"]  # fmt: skip


@dataclass(frozen=True)
class SourceLimits:
    max_bytes: int = 2 * 2**30
    max_files: int = 100_000


def ignore_spec(rules_text: str | None) -> pathspec.PathSpec[Any]:
    """Gitignore-style rules (from .kilnignore, else .dockerignore) plus what is always ignored."""
    lines = list(ALWAYS_IGNORED) + (rules_text.splitlines() if rules_text else [])
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _rules_in(root: Path) -> str | None:
    for name in IGNORE_FILES:
        if (root / name).is_file():
            return (root / name).read_text(errors="replace")
    return None


def walk(root: Path) -> Iterator[Path]:
    """The app's files (and links), relative to ``root``, minus ignored ones, sorted."""
    spec = ignore_spec(_rules_in(root))
    for directory, dirnames, filenames in os.walk(root):
        here = Path(directory)
        rel_dir = here.relative_to(root)
        kept_dirs = []
        for name in sorted(dirnames):
            rel = (rel_dir / name).as_posix()
            if (here / name).is_symlink():
                if not spec.match_file(rel):
                    yield rel_dir / name
            elif not spec.match_file(rel + "/"):
                kept_dirs.append(name)
        dirnames[:] = kept_dirs
        for name in sorted(filenames):
            rel_path = rel_dir / name
            if not spec.match_file(rel_path.as_posix()):
                yield rel_path


def pack(root: Path, out: IO[bytes]) -> tuple[int, int]:
    """Write ``root`` as a gzipped tar to ``out``; returns (files, bytes before compression)."""
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a directory; kiln deploy takes the app's directory")
    files = size = 0
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=6) as tar:
        for rel in walk(root):
            path = root / rel
            info = tar.gettarinfo(str(path), arcname=rel.as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with path.open("rb") as file:
                    tar.addfile(info, file)
                size += info.size
            elif info.issym():
                tar.addfile(info)
            else:
                continue
            files += 1
    return files, size


def _problem(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return f"{name!r} is an absolute path"
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../"):
        return f"{name!r} points outside the app (..)"
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        return f"{name!r} is a device file or FIFO"
    if member.issym() or member.islnk():
        target = member.linkname
        if member.issym():
            target = posixpath.join(posixpath.dirname(normal), target)
        resolved = posixpath.normpath(target)
        if member.linkname.startswith("/") or resolved == ".." or resolved.startswith("../"):
            return f"{name!r} is a link to {member.linkname!r}, outside the app"
    return None


def extract(archive: Path, dest: Path, limits: SourceLimits) -> int:
    """Extract a .tar.gz upload into ``dest`` (which must be empty); returns the file count."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            _check(members, limits)
            spec = ignore_spec(_archived_rules(tar, members))
            kept = [m for m in members if m.isdir() or not spec.match_file(m.name)]
            tar.extractall(dest, members=kept, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if isinstance(exc, tarfile.FilterError):
            raise InvalidInput(
                f"the source archive was refused: {exc}", code="unsafe_archive"
            ) from None
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True, exist_ok=True)
        raise InvalidInput(
            f"the upload is not a complete .tar.gz archive ({type(exc).__name__}: {exc}); it may "
            "have been cut off: run kiln deploy again",
            code="bad_archive",
        ) from None
    return sum(1 for m in kept if m.isfile())


def _check(members: list[tarfile.TarInfo], limits: SourceLimits) -> None:
    files = [m for m in members if m.isfile()]
    for member in members:
        problem = _problem(member)
        if problem:
            raise InvalidInput(
                f"the source archive was refused: {problem}. Deploy a directory whose files and "
                "links all stay inside it",
                code="unsafe_archive",
            )
    if len(files) > limits.max_files:
        raise InvalidInput(
            f"the source has {len(files)} files, over the limit of {limits.max_files}; add what "
            "the app does not need to .kilnignore",
            code="source_too_large",
        )
    total = sum(m.size for m in files)
    if total > limits.max_bytes:
        biggest = max(files, key=lambda m: m.size)
        raise InvalidInput(
            f"the source is {total / 2**20:.0f} MiB, over the limit of "
            f"{limits.max_bytes / 2**20:.0f} MiB (largest file: {biggest.name}, "
            f"{biggest.size / 2**20:.0f} MiB). Keep weights and data out of the source (.kilnignore)"
            ": models are fetched at release time",
            code="source_too_large",
        )


def _archived_rules(tar: tarfile.TarFile, members: list[tarfile.TarInfo]) -> str | None:
    by_name = {posixpath.normpath(m.name): m for m in members if m.isfile()}
    for name in IGNORE_FILES:
        member = by_name.get(name)
        if member is not None and member.size < 2**20:
            handle = tar.extractfile(member)
            if handle is not None:
                return io.TextIOWrapper(handle, errors="replace").read()
    return None


def tree_digest(root: Path) -> str:
    """SHA-256 over every file's path, executable bit and content (and every link's target)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            digest.update(f"L {rel} {path.readlink()}\n".encode())
            continue
        executable = "x" if os.access(path, os.X_OK) else "-"
        digest.update(f"F {rel} {executable} {_file_hash(path)}\n".encode())
    return digest.hexdigest()


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
