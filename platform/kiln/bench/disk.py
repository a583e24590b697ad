"""Disk an app takes after many deploys, with garbage collection and without: slugs,
virtualenvs, uv's cache (hard links counted once) and, with ``--images``, image tags, side by side.

    python -m kiln.bench.disk [--deploys 30] [--keep 10] [--images] [--engine URL]

Every deploy changes the code of ``examples/echo``; every third one its dependencies too (a new
virtualenv: one more small package). "without" keeps every release (what Kiln did before it collected garbage); "with"
is Kiln's default: each deploy removes what no kept release (the last ``--keep``, the running
one) runs. Target: the disk stops growing once ``--keep`` releases exist.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from kiln.bench.build import EXAMPLE
from kiln.builds.artifacts import ArtifactBuilder
from kiln.builds.builder import Builder
from kiln.builds.image import ImageBuilder
from kiln.builds.slug import SlugBuilder
from kiln.builds.source import pack
from kiln.deploy import Deployer
from kiln.engine import ContainerEngine, connect_engine
from kiln.models import BuildStatus
from kiln.release.releaser import Releaser
from kiln.sandbox import sandbox_for
from kiln.settings import Settings
from kiln.store import Store

MiB = 2**20
EXTRAS = ("six", "attrs", "packaging", "idna", "certifi", "wrapt", "toml")  # small, pure


def disk_use(root: Path, seen: set[tuple[int, int]] | None = None) -> int:
    """Bytes allocated under ``root``, each inode once (virtualenvs hard-link uv's cache)."""
    seen = set() if seen is None else seen
    total = 0
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = (Path(folder) / name).lstat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def _count(folder: Path) -> int:
    return (
        sum(1 for entry in folder.iterdir() if not entry.name.startswith("."))
        if folder.is_dir()
        else 0
    )


def _run(
    deploys: int, keep: int, engine: ContainerEngine | None, checkpoints: list[int]
) -> list[tuple[int, int, int, int]]:
    """(the app's bytes, uv cache's other bytes, artifacts, virtualenvs) after each checkpoint."""
    figures = []
    with tempfile.TemporaryDirectory(prefix="kiln-bench-disk-") as tmp:
        scratch = Path(tmp)
        settings = Settings(home=scratch / "home", keep_releases=keep)
        store = Store.open(settings)
        store.create_app("bench", actor="bench")
        artifacts: ArtifactBuilder = (
            ImageBuilder(engine, settings) if engine is not None else SlugBuilder(settings)
        )
        releaser = Releaser(store, settings, engine=lambda: engine)
        deployer = Deployer(store, Builder(settings, artifacts), releaser)
        app = scratch / "app"
        shutil.copytree(EXAMPLE, app)
        box = sandbox_for(settings, "bench", store.sandbox_id("bench"))
        try:
            for n in range(1, deploys + 1):
                (app / "main.py").write_text((EXAMPLE / "main.py").read_text() + f"\n# {n}\n")
                if n % 3 == 0:
                    (app / "requirements.txt").write_text(
                        (EXAMPLE / "requirements.txt").read_text()
                        + f"{EXTRAS[(n // 3) % len(EXTRAS)]}\n"
                    )
                archive = scratch / f"{uuid.uuid4().hex}.tar.gz"
                with archive.open("wb") as out:
                    pack(app, out)
                build = deployer.deploy("bench", archive, actor="bench")
                archive.unlink()
                if build.status is not BuildStatus.SUCCEEDED:
                    raise SystemExit(f"deploy {n} failed: {build.error}")
                if n in checkpoints:
                    seen: set[tuple[int, int]] = set()
                    mine = disk_use(box.root, seen)
                    cache = disk_use(settings.uv_cache_dir or settings.home / "cache" / "uv", seen)
                    made = (len(engine.images_of("kiln/bench")) if engine is not None
                            else _count(box.slugs))  # fmt: skip
                    figures.append((mine, cache, made, _count(box.venvs)))
        finally:
            releaser.destroy_app("bench")
            store.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deploys", type=int, default=30)
    parser.add_argument("--keep", type=int, default=Settings().keep_releases)
    parser.add_argument("--images", action="store_true", help="build images, not slugs")
    parser.add_argument("--engine", help="Docker API URL (default: DOCKER_HOST)")
    args = parser.parse_args()
    engine = connect_engine(args.engine or Settings().resolved_docker_host) if args.images else None
    if args.images and engine is None:
        raise SystemExit("--images: no container engine answers (set DOCKER_HOST or --engine)")
    step = max(1, args.deploys // 6)
    checkpoints = sorted({*range(step, args.deploys + 1, step), args.deploys})
    without = _run(args.deploys, 1000, engine, checkpoints)  # keeps all
    with_gc = _run(args.deploys, args.keep, engine, checkpoints)
    print(f"app examples/echo, {args.deploys} deploys, keep {args.keep}")
    if engine is not None:  # the engine's disk is its own: count the tags it holds
        print(f"{'deploys':>8}{'images w/o gc':>15}{'images with':>13}")
        for n, (a, b) in zip(checkpoints, zip(without, with_gc, strict=True), strict=True):
            print(f"{n:>8}{a[2]:>15}{b[2]:>13}")
        return
    print(
        "app: its sandbox (slugs, virtualenvs; as root its own uv cache too);"
        " cache: the shared uv cache (not root), beyond what the app links"
    )
    print(f"{'deploys':>8}{'app w/o gc':>12}{'app with':>10}{'cache':>9}"
          f"{'slugs w/o':>12}{'slugs with':>12}{'venvs w/o':>11}{'venvs with':>12}")  # fmt: skip
    for n, (a, b) in zip(checkpoints, zip(without, with_gc, strict=True), strict=True):
        print(f"{n:>8}{a[0] / MiB:>9.1f}MiB{b[0] / MiB:>7.1f}MiB{b[1] / MiB:>6.1f}MiB"
              f"{a[2]:>12}{b[2]:>12}{a[3]:>11}{b[3]:>12}")  # fmt: skip


if __name__ == "__main__":
    main()
