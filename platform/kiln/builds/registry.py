"""The image registry of a cluster: builds push each image there, and a node whose engine lacks
a release's image pulls it from there before the dyno starts.

Either one of the operator's (``KILN_REGISTRY`` with ``KILN_REGISTRY_USERNAME`` and
``KILN_REGISTRY_PASSWORD``), or the one ``kiln up --cluster`` runs itself: Debian's
``docker-registry`` (the CNCF distribution registry) on the cluster address, its storage in
``KILN_HOME/registry``, with a password of its own (htpasswd, bcrypt). Images keep their local
tag ``kiln/<app>:b<build>`` on the head (garbage collection reads those); the registry holds
``<registry>/kiln/<app>:b<build>``.
"""

from __future__ import annotations

__all__ = ["EmbeddedRegistry", "RegistryAccess", "registry_access"]

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

import httpx

from kiln.errors import Unavailable
from kiln.proc import alive, log_tail
from kiln.settings import Settings

USERNAME = "kiln"


@dataclass(frozen=True)
class RegistryAccess:
    address: str  # host:port, optionally with a path: where images are pushed and pulled
    username: str | None = None
    password: str | None = None

    def remote(self, local_tag: str) -> str:
        """``kiln/echo:b3`` as it is named in the registry."""
        return f"{self.address.rstrip('/')}/{local_tag}"

    def auth(self) -> dict[str, str] | None:
        if self.username is None:
            return None
        return {"username": self.username, "password": self.password or ""}

    def environment(self) -> dict[str, str]:
        """What a node's processes need to pull (it travels in the join token)."""
        env = {"KILN_REGISTRY": self.address}
        if self.username is not None:
            env.update(KILN_REGISTRY_USERNAME=self.username,
                       KILN_REGISTRY_PASSWORD=self.password or "")  # fmt: skip
        return env


def registry_access(settings: Settings) -> RegistryAccess | None:
    """The registry builds push to: the operator's, the embedded one where it runs, or none."""
    if settings.registry:
        password = settings.registry_password
        return RegistryAccess(
            settings.registry, settings.registry_username,
            password.get_secret_value() if password is not None else None,
        )  # fmt: skip
    embedded = EmbeddedRegistry(settings)
    return embedded.access() if embedded.configured() else None


class EmbeddedRegistry:
    """``docker-registry`` for a cluster head, started by ``kiln up --cluster``, stopped by PID."""

    BINARY = "docker-registry"

    def __init__(self, settings: Settings, host: str | None = None) -> None:
        self.settings = settings
        self.host = host or settings.cluster_address
        self.root = settings.home / "registry"
        self.pid_file = settings.home / "run" / "registry.pid"
        self.log = settings.home / "logs" / "registry.log"

    def configured(self) -> bool:
        return self.host is not None and (self.root / "config.yml").exists()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.settings.registry_port}"

    def access(self) -> RegistryAccess:
        return RegistryAccess(self.address, USERNAME, (self.root / "password").read_text().strip())

    def available(self) -> bool:
        return shutil.which(self.BINARY) is not None

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def answers(self) -> bool:
        try:  # 401 without credentials: it runs, and asks for them
            return httpx.get(f"http://{self.address}/v2/", timeout=2).status_code in (200, 401)
        except httpx.TransportError:
            return False

    def ensure(self, timeout_s: float = 30.0) -> RegistryAccess:
        """Write its config and password (once), start it unless it runs; wait until it answers."""
        import bcrypt

        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        password_file = self.root / "password"
        if not password_file.exists():
            descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(secrets.token_urlsafe(24))
        password = password_file.read_text().strip()
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()
        (self.root / "htpasswd").write_text(f"{USERNAME}:{hashed}\n")
        (self.root / "config.yml").write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.address}\n"
            f"auth:\n  htpasswd:\n    realm: kiln\n    path: {self.root / 'htpasswd'}\n"
        )
        if self.pid() is None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self.pid_file.parent.mkdir(parents=True, exist_ok=True)
            with self.log.open("ab") as out:
                process = subprocess.Popen(
                    [self.BINARY, "serve", str(self.root / "config.yml")], stdout=out,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
            self.pid_file.write_text(f"{process.pid}\n")
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            pid = self.pid()
            if pid is None or time.monotonic() > deadline:
                raise Unavailable(
                    f"the image registry did not start on {self.address}; its log ({self.log}) "
                    f"ends with:\n{log_tail(self.log)}\nIs the port taken? Set KILN_REGISTRY_PORT.",
                    code="registry_failed",
                )
            time.sleep(0.1)
        return self.access()

    def stop(self) -> int | None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return pid
