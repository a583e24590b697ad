"""The platform's own PostgreSQL (with pgvector), for the vector-store add-on's embedded default.

It runs the PostgreSQL 16 + pgvector binaries the ``pgserver`` PyPI package ships, in
``$KILN_HOME/pg``, listening on 127.0.0.1 (``KILN_VECTOR_PORT``, default 5433) with password
(SCRAM) authentication, so each app's role can reach its own database only. As root it runs as
the system user ``pgserver``, since PostgreSQL refuses to run as root. At scale, give
``KILN_VECTOR_DATABASE_URL`` (an admin URL of any PostgreSQL with pgvector) instead.
"""

from __future__ import annotations

__all__ = ["EmbeddedPostgres"]

import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from kiln.errors import Unavailable
from kiln.settings import Settings

_SYSTEM_USER = "pgserver"


def _binaries() -> Path:
    try:
        from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError:
        raise Unavailable(
            "the embedded PostgreSQL needs the pgserver package (pip install pgserver), or set "
            "KILN_VECTOR_DATABASE_URL to a PostgreSQL with pgvector",
            code="no_postgres",
        ) from None
    return Path(POSTGRES_BIN_PATH)


class EmbeddedPostgres:
    def __init__(self, settings: Settings) -> None:
        self.root = settings.resolved_pg_dir
        self.data = self.root / "data"
        self.port = settings.vector_port
        self.cluster_address = settings.cluster_address
        self.password_file = self.root / "superuser.password"
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:10]
        # Unix socket paths must stay short: beside the data where that path is short (as
        # root), else a directory of the user's own (0700) under the temp dir.
        self.sockets = (
            self.root / "run"
            if len(str(self.root)) < 60
            else Path(tempfile.gettempdir()) / f"kiln-pg-{digest}"
        )

    # -- running it ----------------------------------------------------------------------------

    def _run_as(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        from pgserver.utils import ensure_user_exists

        entry = ensure_user_exists(_SYSTEM_USER)
        assert entry is not None, f"could not create the system user {_SYSTEM_USER}"
        return {"user": entry.pw_uid, "group": entry.pw_gid}

    def _command(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(_binaries() / name), *args], capture_output=True, text=True, timeout=120,
            **self._run_as(),
        )  # fmt: skip

    def _prepare(self) -> None:
        as_user = self._run_as()
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(parents=True, exist_ok=True)
        if as_user:
            from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions

            ensure_folder_permissions(_binaries().parent, 0o555)
            for path in (self.root, self.sockets):
                ensure_prefix_permissions(path)
                shutil.chown(path, as_user["user"], as_user["group"])
        if not self.password_file.exists():
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(24))

    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def running(self) -> bool:
        return (
            self.initialized()
            and self._command("pg_ctl", "-D", str(self.data), "status").returncode == 0
        )

    def ensure(self) -> str:
        """Initialize (once) and start (if stopped); returns the superuser's URL."""
        self._prepare()
        if not self.initialized():
            with tempfile.NamedTemporaryFile("w", dir=self.root, delete=False) as pwfile:
                pwfile.write(self.password_file.read_text())
            as_user = self._run_as()
            if as_user:
                os.chown(pwfile.name, as_user["user"], as_user["group"])
            try:
                result = self._command(
                    "initdb", "-D", str(self.data), "-U", "postgres", "--encoding=UTF8",
                    "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", f"--pwfile={pwfile.name}",
                )  # fmt: skip
            finally:
                Path(pwfile.name).unlink(missing_ok=True)
            if result.returncode != 0:
                raise Unavailable(
                    f"initdb failed: {result.stderr.strip()[-1500:]}", code="postgres_failed"
                )
        if not self.running():
            result = self._command(
                "pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-l", str(self.root / "postgres.log"),
                "-o", f"-p {self.port} -k {self.sockets} -c listen_addresses={self._listen()}",
                "start",
            )  # fmt: skip
            if result.returncode != 0:
                log = (
                    (self.root / "postgres.log").read_text(errors="replace")[-1500:]
                    if (self.root / "postgres.log").exists()
                    else ""
                )
                raise Unavailable(
                    f"PostgreSQL did not start on 127.0.0.1:{self.port} ({result.stderr.strip()[-500:]}); "
                    f"its log ends with:\n{log}\nIs the port taken? Set KILN_VECTOR_PORT.",
                    code="postgres_failed",
                )
        return self.admin_url()

    def _listen(self) -> str:
        """Loopback; and a cluster head's address, so dynos on other nodes reach their stores
        (each app's role and database, with its own password: scram-sha-256)."""
        if not self.cluster_address:
            return "127.0.0.1"
        hba = self.data / "pg_hba.conf"
        rule = "host all all 0.0.0.0/0 scram-sha-256  # kiln: nodes of the cluster\n"
        if rule not in hba.read_text():
            with hba.open("a") as out:
                out.write(rule)
        return f"127.0.0.1,{self.cluster_address}"

    def admin_url(self) -> str:
        """The superuser's URL, on the address apps' URLs are made from: the cluster address
        where nodes must reach it, else loopback."""
        host = self.cluster_address or "127.0.0.1"
        return f"postgresql://postgres:{self.password_file.read_text().strip()}@{host}:{self.port}/postgres"

    def stop(self) -> bool:
        if not self.running():
            return False
        self._command("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        return True
