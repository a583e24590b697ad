"""The control plane in the foreground: open the store, make sure the local CLI has a token, serve.

serve(Settings(api_port=7100))    # blocks until SIGINT/SIGTERM
"""

from __future__ import annotations

__all__ = ["bootstrap_token", "check_port_free", "serve"]

import errno
import os
import socket
from typing import TYPE_CHECKING

import uvicorn

from kiln.api import create_app
from kiln.control.platform import Platform
from kiln.control.process import PidFile
from kiln.credentials import Credentials, read_credentials_file, write_credentials
from kiln.errors import Conflict
from kiln.sandbox import isolation
from kiln.settings import Settings
from kiln.store import Store

if TYPE_CHECKING:
    pass

BOOTSTRAP_TOKEN_NAME = "local CLI (kiln up)"  # noqa: S105 (a label)


def bootstrap_token(store: Store, settings: Settings) -> bool:
    """Give the local CLI a working token and the API's URL; True if a new token was made."""
    stored = read_credentials_file(settings.home)
    if stored.token and store.authenticate(stored.token) is not None:
        if stored.api_url != settings.api_url:
            write_credentials(
                Credentials(api_url=settings.api_url, token=stored.token), settings.home
            )
        return False
    token = store.create_token(BOOTSTRAP_TOKEN_NAME)
    write_credentials(Credentials(api_url=settings.api_url, token=token.token), settings.home)
    return True


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise Conflict(
                f"port {port} on {host} is already in use (another kiln up?); stop it with "
                "kiln down, or pick another port with --api-port",
                code="port_in_use",
            ) from None


def secure_home(settings: Settings) -> None:
    """KILN_HOME holds the platform's keys, database, credentials and repositories: nothing the
    platform starts makes files others can read (umask 077, inherited by Ray and the dynos'
    supervisors), and what an older version left open is closed."""
    os.umask(0o077)
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    # Others may pass through (the embedded PostgreSQL's own user needs to reach KILN_HOME/pg),
    # never list or read it.
    home.chmod(home.stat().st_mode & 0o711)
    for entry in home.iterdir():
        if entry.is_symlink() or entry.name == "pg":
            continue
        entry.chmod(0o700 if entry.is_dir() else 0o600)


def serve(settings: Settings) -> None:
    """Run the control plane until interrupted; the pid file lets ``kiln down`` stop it."""
    secure_home(settings)
    pid_file = PidFile(settings.home)
    pid_file.claim()
    try:
        check_port_free(settings.api_host, settings.api_port)
        store = Store.open(settings)
        if bootstrap_token(store, settings):
            print(f"-----> Created a platform token for the local CLI in {settings.home}")
        print(
            f"-----> Kiln control plane on {settings.api_url} (store: {store.engine.dialect.name})"
        )
        report = isolation(settings)
        print(f"-----> Isolation: {report.summary}")
        platform = (
            Platform.serving(settings, store) if settings.run else Platform(settings, store=store)
        )
        config = uvicorn.Config(
            create_app(platform),
            host=settings.api_host,
            port=settings.api_port,
            log_level="warning",
            access_log=False,
        )
        uvicorn.Server(config).run()
        store.close()
    finally:
        pid_file.release()
