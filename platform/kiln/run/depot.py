"""Artifacts and weights travel to the node that runs them.

A release's slug (its directory, its virtualenv and the runtime that virtualenv reads) and its
model (``models--org--name`` in the model cache) are made on the head. A dyno supervisor on
another node finds them missing at the same paths on its own disk and asks the depot, an actor
pinned to the head, to send each directory: a tar stream (ownership, modes, hard and symbolic
links kept) in chunks through Ray's object store, then the SHA-256 and size of what it sent. The
node checks both, unpacks beside the target and renames it into place only when complete, so a
cut transfer leaves nothing a dyno could start from; the next start fetches again. What arrived
stays as the node's cache. Only the head's sandbox directory and model cache are ever sent.

Only platform processes reach the depot (Ray's token); what it sends was written on the head by
``tar`` from real directories, so no member can lead through a link out of its target.
"""

from __future__ import annotations

__all__ = [
    "DEPOT_NAME", "Fetched", "TransferFailed", "complete", "fetch", "has_revision", "pack",
    "receive", "runtimes_of",
]  # fmt: skip

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEPOT_NAME = "kiln-depot"
NAMESPACE = "kiln"
CHUNK = 4 * 2**20
COMPLETE = ".kiln-complete"  # slugs, virtualenvs and the runtime are marked when whole


class TransferFailed(Exception):
    pass


@dataclass(frozen=True)
class Fetched:
    path: Path
    bytes: int
    seconds: float


def _inside(path: Path, roots: list[Path]) -> Path:
    """``path`` as it is, if it is a real directory strictly inside one of ``roots``."""
    if not path.is_absolute() or ".." in path.parts:
        raise TransferFailed(f"{path} is not an absolute path without '..'")
    if path.is_symlink() or not path.is_dir():
        raise TransferFailed(f"{path} is not a directory on the head")
    real = path.resolve()
    if not any(real != root and real.is_relative_to(root) for root in roots):
        raise TransferFailed(f"{path} is outside what the depot sends (sandboxes, model cache)")
    return real


def pack(path: Path, roots: list[Path]) -> Iterator[bytes | dict[str, Any]]:
    """The tar stream of ``path`` in chunks, then ``{"sha256", "bytes"}`` of all of it."""
    source = _inside(path, [r.resolve() for r in roots])
    process = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(source.parent), "-cf", "-", source.name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    digest, size, finished = hashlib.sha256(), 0, False
    try:
        while chunk := process.stdout.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            yield chunk
        finished = True
    finally:
        # At the end of its output tar may not have exited yet: wait for it then (killing it
        # there would fail a sound transfer); kill it only when the reader stopped early.
        if not finished:
            process.kill()
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
    if code != 0:
        raise TransferFailed(f"tar could not read {path}: {process.stderr.read().decode()[-500:]}")
    yield {"sha256": digest.hexdigest(), "bytes": size}


async def receive(
    chunks: AsyncIterator[bytes | dict[str, Any]], path: Path, *, merge: bool = False
) -> int:
    """Unpack the stream ``pack`` made into ``path``, all or nothing; returns the bytes
    received. ``path`` must not exist, unless ``merge``: then what it lacks is added (a model
    folder gaining a revision, its files in use by running dynos) and nothing is replaced but
    ``refs``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.incoming-", dir=path.parent))
    try:
        process = subprocess.Popen(
            ["tar", "--numeric-owner", "--same-owner", "-xpf", "-", "-C", str(staging)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert process.stdin is not None and process.stderr is not None
        digest, size, trailer = hashlib.sha256(), 0, None
        try:
            async for item in chunks:
                if isinstance(item, dict):
                    trailer = item
                    break
                digest.update(item)
                size += len(item)
                await asyncio.to_thread(process.stdin.write, item)
        finally:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
            code = await asyncio.to_thread(process.wait)
        if trailer is None:
            raise TransferFailed(f"the transfer of {path.name} was cut after {size} bytes")
        if trailer.get("sha256") != digest.hexdigest() or trailer.get("bytes") != size:
            raise TransferFailed(
                f"{path.name} arrived damaged: {size} bytes with SHA-256 {digest.hexdigest()[:12]}"
                f", the head sent {trailer.get('bytes')} with {str(trailer.get('sha256'))[:12]}"
            )
        if code != 0:
            raise TransferFailed(
                f"could not unpack {path.name}: {process.stderr.read().decode()[-500:]}"
            )
        unpacked = staging / path.name
        if unpacked.is_symlink() or not unpacked.is_dir():
            raise TransferFailed(f"the head sent no directory {path.name}")
        if merge and path.is_dir() and not path.is_symlink():
            _merge(unpacked, path)
        else:
            unpacked.rename(path)
        return size
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _merge(source: Path, target: Path) -> None:
    """Move into ``target`` what it lacks from ``source``; ``refs`` files are replaced."""
    for directory, dirnames, filenames in os.walk(source):
        here = Path(directory)
        there = target / here.relative_to(source)
        for name in dirnames:
            if (here / name).is_symlink():
                filenames.append(name)
        dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]
        for name in dirnames:
            if not (there / name).exists():
                (there / name).mkdir(mode=(here / name).stat().st_mode & 0o7777)
        for name in filenames:
            existing = there / name
            keep = here.relative_to(source).parts[:1] != ("refs",)
            if keep and (existing.exists() or existing.is_symlink()):
                continue
            (here / name).replace(existing)


def complete(path: Path) -> bool:
    """A slug, virtualenv or runtime directory is whole once it has its mark."""
    return (path / COMPLETE).exists()


def runtimes_of(venv: Path) -> list[Path]:
    """The runtime directory the virtualenv's kiln-runtime.pth names, once the venv is here."""
    found = list(venv.glob("lib/python3*/site-packages/kiln-runtime.pth"))
    return [Path(found[0].read_text().strip())] if found else []


def has_revision(revision: str | None) -> Callable[[Path], bool]:
    """Whether a model folder (Hugging Face's cache layout) holds ``revision``."""

    def present(folder: Path) -> bool:
        name = revision or "main"
        if len(name) == 40 and all(c in "0123456789abcdef" for c in name):
            return (folder / "snapshots" / name).is_dir()
        ref = folder / "refs" / name
        return ref.is_file() and (folder / "snapshots" / ref.read_text().strip()).is_dir()

    return present


def _depot_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class Depot:
        # A few chunks ahead of the reader at most, not the whole artifact in the object store.
        @ray.method(_generator_backpressure_num_objects=4)
        def send(self, path: str, roots: list[str]) -> Iterator[bytes | dict[str, Any]]:
            yield from pack(Path(path), [Path(r) for r in roots])

    return Depot


def _depot() -> Any:
    return (
        _depot_class()
        .options(
            name=DEPOT_NAME,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_concurrency=8,  # several nodes fetch at once
            resources={"node:__internal_head__": 0.001},
        )
        .remote()
    )


async def _from_depot(path: Path, roots: list[Path]) -> AsyncIterator[bytes | dict[str, Any]]:
    stream = _depot().send.remote(str(path), [str(r) for r in roots])
    async for ref in stream:
        yield await ref


async def fetch(
    path: Path, roots: list[Path], *, present: Callable[[Path], bool], say: Callable[[str], None],
    source: Callable[[Path, list[Path]], AsyncIterator[bytes | dict[str, Any]]] | None = None,
) -> Fetched | None:  # fmt: skip
    """Make ``path`` present on this node, from the head's depot, unless ``present(path)``
    already. One fetch per path per node at a time: others wait for it, then find it there.
    A directory that is there but not ``present`` (a model folder without the revision now
    wanted) gains what it lacks; a slug directory without its mark is replaced. Returns what
    was fetched, or None when nothing had to be."""
    if present(path):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / f".{path.name}.lock"
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, descriptor, fcntl.LOCK_EX)
        if present(path):  # another replica on this node brought it meanwhile
            return None
        merge = path.is_dir() and not path.is_symlink() and not (path / COMPLETE).exists()
        if path.is_symlink() or (path.exists() and present is complete):
            stale = path.parent / f".{path.name}.stale-{os.urandom(4).hex()}"
            path.rename(stale)  # never started from (it has no mark)
            shutil.rmtree(stale, ignore_errors=True)
            merge = False
        say(f"fetching {path} from the head")
        started = time.monotonic()
        size = await receive((source or _from_depot)(path, roots), path, merge=merge)
        if not present(path):
            raise TransferFailed(f"{path} arrived, but without what this release needs")
        return Fetched(path, size, time.monotonic() - started)
    finally:
        os.close(descriptor)
