"""Build times for an example app, as image and as slug: first build, code-only rebuild, and
dependency-change rebuild, side by side in one run.

    python -m kiln.bench.build [--app examples/echo] [--engine unix:///path/docker.sock]

Targets: a code-only rebuild takes <= 0.2x the first build and under 10 s here. The
first build is made cold: a fresh uv cache for slugs, and a dependency file the engine's layer
cache has never seen (a nonce comment) for images.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from kiln.builds.artifacts import ArtifactBuilder
from kiln.builds.builder import Builder
from kiln.builds.image import ImageBuilder
from kiln.builds.slug import SlugBuilder
from kiln.builds.source import pack
from kiln.deploy import Deployer
from kiln.engine import connect_engine
from kiln.models import BuildStatus
from kiln.release.releaser import Releaser
from kiln.settings import Settings
from kiln.store import Store

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "echo"


def _build(builder: Deployer, app_dir: Path, scratch: Path) -> float:
    archive = scratch / f"{uuid.uuid4().hex}.tar.gz"
    with archive.open("wb") as out:
        pack(app_dir, out)
    started = time.perf_counter()
    result = builder.deploy("bench", archive, actor="bench")
    elapsed = time.perf_counter() - started
    if result.status != BuildStatus.SUCCEEDED:
        raise SystemExit(
            f"build failed: {result.error}\n{builder.store.builds.log('bench', result.id)}"
        )
    return elapsed


def _measure(
    kind: str, make: type[ArtifactBuilder] | None, source: Path, engine_url: str | None
) -> list[float]:
    with tempfile.TemporaryDirectory(prefix=f"kiln-bench-{kind}-") as tmp:
        scratch = Path(tmp)
        settings = Settings(home=scratch / "home")
        store = Store.open(settings)
        store.create_app("bench", actor="bench")
        artifacts: ArtifactBuilder
        if kind == "image":
            engine = connect_engine(engine_url)
            assert engine is not None
            artifacts = ImageBuilder(engine, settings)
        else:
            artifacts = SlugBuilder(settings)
        builder = Deployer(store, Builder(settings, artifacts), Releaser(store, settings))
        app = scratch / "app"
        shutil.copytree(source, app)
        requirements = app / "requirements.txt"
        nonce = uuid.uuid4().hex
        requirements.write_text(requirements.read_text() + f"# bench {nonce}\n")
        first = _build(builder, app, scratch)
        main = app / "main.py"
        main.write_text(main.read_text() + f"\n# code change {nonce}\n")
        code_only = _build(builder, app, scratch)
        requirements.write_text(requirements.read_text() + "# dependency change\n")
        dependency_change = _build(builder, app, scratch)
        store.close()
        return [first, code_only, dependency_change]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--app", type=Path, default=EXAMPLE, help="app directory to build")
    parser.add_argument("--engine", help="Docker API URL (default: DOCKER_HOST)")
    args = parser.parse_args()
    kinds = ["slug"]
    if connect_engine(args.engine or Settings().resolved_docker_host) is not None:
        kinds.insert(0, "image")
    else:
        print("(no container engine answers: measuring slugs only)")
    print(f"app: {args.app}")
    print(
        f"{'artifact':<10}{'first':>10}{'code-only':>12}{'deps change':>14}{'code/first':>12}  target <=0.2x, <10s"
    )
    for kind in kinds:
        first, code_only, deps = _measure(kind, None, args.app, args.engine)
        ratio = code_only / first
        verdict = "met" if ratio <= 0.2 and code_only < 10 else "MISSED"
        print(
            f"{kind:<10}{first:>9.2f}s{code_only:>11.2f}s{deps:>13.2f}s{ratio:>11.2f}x  {verdict}"
        )


if __name__ == "__main__":
    main()
