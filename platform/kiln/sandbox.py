"""Per-app sandboxes: the unprivileged uid, HOME and directories an app's own code runs with
(slug builds, release commands, slug dynos), apart from the platform's ``KILN_HOME`` and from
every other app.

    box = sandbox_for(settings, "chat", sandbox_id=7)   # uid 200007 when the platform is root
    box.ensure()                                     # its directories, its own, mode 0700
    subprocess.run(command, env={**env, **box.environment()}, **box.process_options())

Where the platform is not root it cannot switch uids: the sandbox then only separates
directories, and every app's code runs as the platform's user (``isolation()`` says so, and
``KILN_ALLOW_SLUGS=false`` keeps such code in containers only).

A sandbox lives under ``Settings.resolved_sandbox_dir`` (``/var/lib/kiln/<id>`` as root), not
under ``KILN_HOME``: an app's uid must reach its own directory, and ``KILN_HOME`` (with the
platform's keys, database and credentials) and the home folders above it stay closed to it.
"""

from __future__ import annotations

__all__ = ["Isolation", "Sandbox", "check_owned", "isolation", "sandbox_for"]

import os
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from kiln.errors import KilnError

if TYPE_CHECKING:  # a replica's worker imports this module at each cold start: not the settings
    from kiln.settings import Settings

_SHARED = 0o711  # the sandboxes' parent: every app's uid passes through, none can list it


class Isolation(BaseModel):
    """How apps' own code is kept apart, as ``kiln up`` and ``kiln status`` report it."""

    per_app_uids: bool = Field(
        description="Each app's code runs as an unprivileged uid of its own."
    )
    slugs_allowed: bool = Field(description="Slug builds and dynos are allowed (KILN_ALLOW_SLUGS).")
    summary: str = Field(description="One line for people.")


def isolation(settings: Settings) -> Isolation:
    if os.geteuid() == 0:
        return Isolation(
            per_app_uids=True, slugs_allowed=settings.allow_slugs,
            summary="per-app uids: each app's builds, release commands and slug dynos run as a "
            f"uid of its own (from {settings.sandbox_uid_base + 1}); containers in a network "
            "of their own",
        )  # fmt: skip
    summary = (
        "single-tenant: the platform is not root, so slug builds, release commands and slug "
        f"dynos run as {_user()}, and can read what it can. Run as root for per-app uids, "
        "or set KILN_ALLOW_SLUGS=false to run apps' code in containers only"
    )
    if not settings.allow_slugs:
        summary = "containers only (KILN_ALLOW_SLUGS=false): slugs are refused"
    return Isolation(per_app_uids=False, slugs_allowed=settings.allow_slugs, summary=summary)


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"


class Sandbox(BaseModel):
    """Where and as whom one app's code runs; travels to dyno supervisors in the DynoSpec.

    Its directory belongs to the platform (group: the app's gid, mode 0750), so the app can
    neither rename nor replace what is in it; inside, the app writes only to ``home``, ``tmp``,
    ``run`` (its dynos' sockets), ``venvs`` and ``cache``. Slugs and the model view are the
    platform's, readable by the app's gid: a slug is read-only to its own dynos."""

    model_config = ConfigDict(frozen=True)

    app: str = Field(description="The app's name.")
    uid: int | None = Field(description="The app's own uid; None: the platform's (not root).")
    root: Path = Field(description="The app's directory.")

    @property
    def gid(self) -> int | None:
        return self.uid

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def sockets(self) -> Path:
        """Where the app's slug dynos listen (unix sockets): only the app and its supervisors
        reach it."""
        return self.root / "run"

    @property
    def venvs(self) -> Path:
        return self.root / "venvs"

    @property
    def uv_cache(self) -> Path:
        return self.root / "cache" / "uv"

    @property
    def slugs(self) -> Path:
        """The app's slugs: written by the platform, read (never written) by the app."""
        return self.root / "slugs"

    @property
    def models(self) -> Path:
        """The app's view of the model cache: its own model's files, linked in."""
        return self.root / "models"

    @property
    def mounts(self) -> Path:
        """The platform's alone: directories mounted into the app's containers."""
        return self.root / "mounts"

    @property
    def shared(self) -> Path:
        """Beside every sandbox: what all apps' uids may read (the in-dyno runtime, uv)."""
        return self.root.parent / ".shared"

    def ensure(self) -> Sandbox:
        """Make the app's directories with their owners and modes; safe to call every time."""
        parent = self.root.parent
        missing = [p for p in (parent, *parent.parents) if not p.exists()]
        for path in reversed(missing):  # each app's uid passes through them (a umask of 077
            path.mkdir(mode=_SHARED, exist_ok=True)  # made missing parents 0700 before)
            os.chmod(path, _SHARED)  # noqa: PTH101
        _check_owned(parent)
        os.chmod(parent, _SHARED)  # noqa: PTH101 (a umask of 077 made it 0700)
        self._make(self.root, 0o750, own=False)
        for path in (self.home, self.tmp, self.sockets, self.venvs, self.uv_cache.parent,
                     self.uv_cache):  # fmt: skip
            self._make(path, 0o700, own=True)
        self._make(self.slugs, 0o750, own=False)
        self._make(self.models, 0o750, own=False)
        self._make(self.mounts, 0o700, own=False, group=False)
        self.shared.mkdir(mode=0o755, exist_ok=True)
        _check_owned(self.shared)
        os.chmod(self.shared, 0o755)  # noqa: PTH101, S103 (public code: the runtime, uv)
        return self

    def _make(self, path: Path, mode: int, *, own: bool, group: bool = True) -> None:
        path.mkdir(mode=mode, exist_ok=True)
        if self.uid is not None:
            os.lchown(path, self.uid if own else 0, self.uid if group else 0)
        if not own:
            _check_owned(path)  # the platform's: never a link the app planted
        os.chmod(path, mode)  # noqa: PTH101

    def environment(self) -> dict[str, str]:
        """HOME and a temp dir of the app's own: nothing it runs writes to the platform's."""
        return {"HOME": str(self.home), "TMPDIR": str(self.tmp), "USER": f"app-{self.app}",
                "LOGNAME": f"app-{self.app}", "XDG_CACHE_HOME": str(self.home / ".cache")}  # fmt: skip

    def process_options(self) -> dict[str, Any]:
        """``subprocess`` arguments that run a command as the app's uid with no other groups,
        creating files only it can read."""
        if self.uid is None:
            return {"umask": 0o077}
        return {"user": self.uid, "group": self.uid, "extra_groups": [], "umask": 0o077}

    def share(self, path: Path) -> None:
        """Make ``path`` (a tree the platform wrote under ``slugs`` or ``models``, which the app
        cannot write to) readable by the app's gid and no one else, never following links."""
        for item in _tree(path):
            info = item.lstat()
            if stat.S_ISLNK(info.st_mode):
                continue
            if self.uid is not None:
                os.lchown(item, 0, self.uid)
            readable = 0o750 if stat.S_ISDIR(info.st_mode) or info.st_mode & 0o100 else 0o640
            os.chmod(item, readable)  # noqa: PTH101

    def link_model(self, cache: Path, folder: str) -> Path:
        """Put the model cache's ``folder`` (``models--org--name``) in the app's view, as hard
        links (no copy; the files stay read-only to the app); returns the view's root."""
        source, view = cache / folder, self.models / folder
        for directory, dirnames, filenames in os.walk(source):
            here = Path(directory)
            target = view / here.relative_to(source)
            target.mkdir(mode=0o750, exist_ok=True)
            if self.uid is not None:
                os.lchown(target, 0, self.uid)
            os.chmod(target, 0o750)  # noqa: PTH101, S103 (the app's gid; whatever the umask)
            for name in [*filenames, *(d for d in dirnames if (here / d).is_symlink())]:
                original, linked = here / name, target / name
                if linked.is_symlink() or linked.exists():
                    continue
                if original.is_symlink():  # snapshots/<commit>/file -> ../../blobs/<hash>
                    linked.symlink_to(original.readlink())
                    continue
                os.chmod(original, 0o644)  # noqa: PTH101 (reachable only through the views)
                try:
                    os.link(original, linked)
                except OSError:  # another filesystem: a copy, once
                    shutil.copy2(original, linked)
        return self.models


def _tree(path: Path) -> list[Path]:
    found = [path]
    if path.is_dir() and not path.is_symlink():
        for directory, dirnames, filenames in os.walk(path):
            found += [Path(directory) / name for name in dirnames + filenames]
    return found


def sandbox_for(settings: Settings, app: str, sandbox_id: int) -> Sandbox:
    """The sandbox of ``app``, numbered ``sandbox_id`` by the store (never a number another app
    had: a recreated app gets a new uid, so nothing the old one left is its)."""
    uid = settings.sandbox_uid_base + sandbox_id if os.geteuid() == 0 else None
    return Sandbox(app=app, uid=uid, root=settings.resolved_sandbox_dir / f"{app}.{sandbox_id}")


def _check_owned(path: Path) -> None:
    check_owned(path, "or set KILN_SANDBOX_DIR to a directory of the platform's own")


def check_owned(path: Path, otherwise: str = "") -> None:
    """``path`` must be a real directory of the platform's user: never a link or a directory
    someone else planted where the platform expected to make its own."""
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise KilnError(
            f"{path} is not a directory owned by this platform's user (someone made it first?); "
            f"remove it{', ' + otherwise if otherwise else ''} and start again",
            code="directory_unsafe",
        )
