"""The unix socket a dyno listens on, as its supervisor reaches it without trusting the app.

A dyno creates its socket in a directory its own code can write to, so it could put a link there
instead, to another app's socket, and have its supervisor carry its (key-checked) traffic to a
neighbour. So the supervisor never connects by that path: it opens the file with ``O_PATH |
O_NOFOLLOW``, checks that it is a socket, and connects through ``/proc/self/fd/N``, which names
that very inode. A link leads nowhere; the path is also short, whatever the directory.

    pinned = PinnedSocket(Path("/var/lib/kiln/x/chat.7/run/dyno.ab12cd.sock"))
    pinned.pin()          # "/proc/self/fd/12", or None while the dyno has not bound it yet
"""

from __future__ import annotations

__all__ = ["PinnedSocket"]

import contextlib
import os
import stat
from pathlib import Path


class PinnedSocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def connect_path(self) -> str | None:
        """What to connect to: the pinned socket, or None before ``pin`` found one."""
        return None if self._fd is None else f"/proc/self/fd/{self._fd}"

    def pin(self) -> str | None:
        """Pin the socket now at ``path`` (a dyno that restarted made a new one). None if there
        is none yet; refuses anything but a socket (a link, a file, a directory)."""
        self.close()
        try:
            fd = os.open(self.path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            os.close(fd)
            return None  # not a socket (yet, or ever): never connected to
        self._fd = fd
        return self.connect_path

    def clear(self) -> None:
        """Remove what is at ``path`` (a socket a dead dyno left), never following a link."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
