"""``kiln images:bootstrap``: a local base image (Debian + Python 3.11) for engines that cannot
reach a registry, made with debootstrap and imported as ``kiln/base:bookworm``."""

from __future__ import annotations

__all__ = ["bootstrap_base_image", "debian_mirror"]

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from kiln.builds.image import LOCAL_BASE
from kiln.engine import ContainerEngine
from kiln.errors import KilnError
from kiln.proc import run_streaming

_PACKAGES = "python3,ca-certificates"
_PRUNE = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
          "usr/share/info", "usr/share/locale")  # fmt: skip


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses (so air-gapped mirrors work), else deb.debian.org."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and "debian" in line and "security" not in line:
                url = next((w for w in words[1:] if w.startswith(("http", "file"))), None)
                if url:
                    return url
    return "http://deb.debian.org/debian"


def bootstrap_base_image(
    engine: ContainerEngine,
    on_line: Callable[[str], None],
    *,
    mirror: str | None = None,
    suite: str = "bookworm",
    reference: str = LOCAL_BASE,
) -> str:
    """Build the base image and import it into ``engine``; returns the image id."""
    if shutil.which("debootstrap") is None:
        raise KilnError(
            "debootstrap is not installed; install it (apt-get install debootstrap) and rerun",
            code="no_debootstrap",
        )
    if os.geteuid() != 0:
        raise KilnError(
            "images:bootstrap needs root (debootstrap does); rerun as root", code="not_root"
        )
    mirror = mirror or debian_mirror()
    with tempfile.TemporaryDirectory(prefix="kiln-rootfs-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        on_line(f"-----> debootstrap {suite} from {mirror} (minbase + {_PACKAGES})")
        code, lines = run_streaming(
            ["debootstrap", "--variant=minbase", f"--include={_PACKAGES}", suite, str(rootfs), mirror],
            lambda line: on_line(f"       {line}"),
        )  # fmt: skip
        if code != 0:
            raise KilnError(
                "debootstrap failed:\n" + "\n".join(lines[-8:]), code="debootstrap_failed"
            )
        for relative in _PRUNE:
            shutil.rmtree(rootfs / relative, ignore_errors=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
        repository, _, tag = reference.rpartition(":")
        on_line(f"-----> Importing the root filesystem as {reference}")
        tarball = Path(scratch) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
        image = engine.import_rootfs(tarball, repository, tag)
        on_line(f"-----> {reference} is ready ({image})")
        return image
