"""The embedded PostgreSQL opens nothing of the platform's user: as root it lives under
/var/lib/kiln, where its system user may go, and no folder above KILN_HOME is widened."""

import os
import shutil
import stat
from pathlib import Path

import pytest

from kiln.addons.postgres import EmbeddedPostgres
from kiln.settings import Settings
from tests.conftest import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="as root only: the PostgreSQL runs as its own user"
    ),
]


def test_no_folder_above_kiln_home_is_opened(tmp_path: Path) -> None:
    private = tmp_path / "someones-home"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    settings = Settings(home=private / ".kiln", vector_port=free_port(), pg_dir=None)
    postgres = EmbeddedPostgres(settings)
    try:
        postgres.ensure()
        assert str(postgres.root).startswith("/var/lib/kiln/pg-")
        assert str(postgres.sockets).startswith(str(postgres.root))  # no predictable /tmp path
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        assert not (private / ".kiln" / "pg").exists()
    finally:
        postgres.stop()
        shutil.rmtree(postgres.root, ignore_errors=True)
