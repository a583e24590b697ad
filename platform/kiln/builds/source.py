"""An app's source on its way in: packed by the CLI honouring ignore files, extracted by the
server without trusting the archive, and digested.

Extraction is ``kiln.builds.unpack``'s: it refuses (and leaves nothing of) any archive that could
write or point outside the app, or that is over a limit.
"""

from __future__ import annotations

__all__ = ["SourceLimits", "extract", "ignore_spec", "pack", "tree_digest"]

import hashlib
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pathspec

from kiln.builds.unpack import SourceLimits, unpack
from kiln.errors import InvalidInput

IGNORE_FILES = (".kilnignore", ".dockerignore")
# Never part of an app's source: VCS data, local environments, caches.
ALWAYS_IGNORED = [".git/", ".hg/", ".venv/", "venv/", "__pycache__/", "*.pyc", ".mypy_cache/",
                  ".pytest_cache/", ".ruff_cache/", ".kiln/", "node_modules/"]  # fmt: skip


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
            elif info.islnk():  # a second name of a file already packed: pack its content again
                info.type, info.linkname, info.size = tarfile.REGTYPE, "", path.stat().st_size
                with path.open("rb") as file:
                    tar.addfile(info, file)
                size += info.size
            elif info.issym():
                tar.addfile(info)
            else:
                continue
            files += 1
    return files, size


def extract(archive: Path, dest: Path, limits: SourceLimits) -> int:
    """Unpack an uploaded archive into ``dest`` (which must be empty) without trusting it
    (``kiln.builds.unpack``), then drop what the app's own ignore rules exclude; returns the
    number of files kept."""
    unpack(archive, dest, limits)
    spec = ignore_spec(_rules_in_tree(dest))
    kept = 0
    for directory, dirnames, filenames in os.walk(dest):  # never into linked directories
        here = Path(directory)
        rel_dir = here.relative_to(dest)
        for name in list(dirnames):
            if (here / name).is_symlink():
                filenames.append(name)  # a link: judged (and counted) as a file below
                dirnames.remove(name)
            elif spec.match_file((rel_dir / name).as_posix() + "/"):
                shutil.rmtree(here / name)
                dirnames.remove(name)
        for name in filenames:
            if spec.match_file((rel_dir / name).as_posix()):
                (here / name).unlink()
            elif not (here / name).is_symlink():
                kept += 1
    return kept


def _rules_in_tree(root: Path) -> str | None:
    """The unpacked app's .kilnignore (else .dockerignore): a regular file, never a link."""
    for name in IGNORE_FILES:
        path = root / name
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 2**20:
            return path.read_text(errors="replace")
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
