"""The in-dyno runtime (``kiln_runtime``) as it goes into artifacts: its code and requirements."""

from __future__ import annotations

__all__ = ["RuntimeBundle", "runtime_bundle"]

import hashlib
import shutil
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

import kiln_runtime

REQUIREMENTS_FILE = "runtime-requirements.txt"
EXCLUDES_FILE = "excludes.txt"  # packages kept out though a dependency asks for them


@dataclass(frozen=True)
class RuntimeBundle:
    package: Path
    requirements: tuple[str, ...]
    digest: str

    def copy_to(self, dest: Path) -> None:
        """Put ``kiln_runtime/`` under ``dest`` (a site-packages or a PYTHONPATH entry)."""
        shutil.copytree(
            self.package, dest / "kiln_runtime", ignore=shutil.ignore_patterns("__pycache__"),
            dirs_exist_ok=True,
        )  # fmt: skip

    def write_requirements(self, path: Path, extra: tuple[str, ...] = ()) -> None:
        """The runtime's own requirements, plus those of the runtime the app uses (``extra``)."""
        path.write_text("".join(f"{r}\n" for r in (*self.requirements, *extra)))


def write_excludes(path: Path, names: tuple[str, ...]) -> None:
    """uv's ``--excludes`` file: packages kept out though a dependency asks for them."""
    if names:
        path.write_text("".join(f"{name}\n" for name in names))


@cache
def runtime_bundle() -> RuntimeBundle:
    """The installed kiln_runtime: its package folder, requirements and a digest of both."""
    package = Path(kiln_runtime.__file__).parent
    requirements = tuple(r for r in metadata.requires("kiln-runtime") or () if "extra ==" not in r)
    digest = hashlib.sha256("\n".join(requirements).encode())
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return RuntimeBundle(package, requirements, digest.hexdigest())
