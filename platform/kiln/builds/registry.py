"""The image registry of a cluster: builds push each image there, and a node whose engine lacks
a release's image pulls it from there before the dyno starts.

Either one of the operator's (``KILN_REGISTRY`` with ``KILN_REGISTRY_USERNAME`` and
``KILN_REGISTRY_PASSWORD``), or the one ``kiln up --cluster`` runs itself: Debian's
``docker-registry`` (the CNCF distribution registry) on the cluster address, its storage in
``KILN_HOME/registry``, with a password of its own (htpasswd, bcrypt) and TLS from a CA of its
own that the head's and the nodes' engines are made to trust. Images keep their local
tag ``kiln/<app>:b<build>`` on the head (garbage collection reads those); the registry holds
``<registry>/kiln/<app>:b<build>``.
"""

from __future__ import annotations

__all__ = ["EmbeddedRegistry", "RegistryAccess", "registry_access", "trust"]

import datetime
import ipaddress
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from kiln.errors import Unavailable
from kiln.proc import alive, log_tail, running_pid
from kiln.settings import Settings

USERNAME = "kiln"


@dataclass(frozen=True)
class RegistryAccess:
    address: str  # host:port, optionally with a path: where images are pushed and pulled
    username: str | None = None
    password: str | None = None
    ca: str | None = None  # PEM of the CA its TLS certificate is signed by, if not a public one

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
        return RegistryAccess(
            self.address, USERNAME, (self.root / "password").read_text().strip(),
            (self.root / "ca.crt").read_text(),
        )  # fmt: skip

    def available(self) -> bool:
        return shutil.which(self.BINARY) is not None

    def pid(self) -> int | None:
        return running_pid(self.pid_file)

    def answers(self) -> bool:
        try:  # 401 without credentials: it runs, and asks for them
            trusted = ssl.create_default_context(cafile=str(self.root / "ca.crt"))
            answer = httpx.get(f"https://{self.address}/v2/", timeout=2, verify=trusted)
            return answer.status_code in (200, 401)
        except httpx.TransportError:
            return False

    def _certificates(self) -> None:
        """A CA of its own and the registry's certificate for its address, made once: engines
        that trust the CA (``trust``) pull over TLS with no insecure-registry setting."""
        if (self.root / "server.crt").exists() and (self.root / "ca.crt").exists():
            return
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Kiln registry CA")])
        ca = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        key = ec.generate_private_key(ec.SECP256R1())
        host = str(self.host)
        try:
            alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            alt = x509.DNSName(host)
        server = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        pem = serialization.Encoding.PEM
        descriptor = os.open(self.root / "server.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))  # fmt: skip
        (self.root / "server.crt").write_bytes(server.public_bytes(pem))
        (self.root / "ca.crt").write_bytes(ca.public_bytes(pem))

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
        self._certificates()
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()
        (self.root / "htpasswd").write_text(f"{USERNAME}:{hashed}\n")
        (self.root / "config.yml").write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.address}\n"
            f"  tls:\n    certificate: {self.root / 'server.crt'}\n"
            f"    key: {self.root / 'server.key'}\n"
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
        access = self.access()
        trust(access)
        return access

    def stop(self) -> int | None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return pid


ENGINE_TRUST = (Path("/etc/docker/certs.d"), Path("/etc/containers/certs.d"))


def trust(access: RegistryAccess, roots: tuple[Path, ...] = ENGINE_TRUST) -> list[Path]:
    """Make this machine's container engines (dockerd, podman) trust the registry's CA for its
    address (they read ``certs.d/<host:port>/ca.crt`` on each pull and push, no restart). Only
    root may; otherwise nothing is written and the README says what to do."""
    if access.ca is None or os.geteuid() != 0:
        return []
    written = []
    host = access.address.split("/", 1)[0]
    for root in roots:
        folder = root / host
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ca.crt").write_text(access.ca)
        written.append(folder / "ca.crt")
    return written
