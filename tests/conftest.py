"""Shared fixtures: isolated settings, both stores, a live control plane on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from kiln.api import create_app
from kiln.control.platform import Platform
from kiln.settings import Settings
from kiln.store import Store

pytest_plugins = ["tests.support.fixtures"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def sandbox_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Apps' sandboxes for the whole session (a short path: dynos' sockets live there). Apps
    numbered alike in different tests share one, as one tenant would: their caches stay warm."""
    if os.geteuid() == 0:
        root = Path("/var/lib/kiln") / f"tests-{uuid.uuid4().hex[:8]}"
    else:
        root = tmp_path_factory.mktemp("sandboxes")
    yield root
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(f"{root}-pg", ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox_root: Path
) -> None:
    """No test reads the developer's ~/.kiln or KILN_* variables."""
    for key in list(os.environ):
        if key.startswith("KILN_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("KILN_HOME", str(tmp_path / "kiln-home"))
    monkeypatch.setenv("KILN_SANDBOX_DIR", str(sandbox_root))
    # Each test's embedded PostgreSQL apart (a short path: its socket lives there).
    monkeypatch.setenv("KILN_PG_DIR", f"{sandbox_root}-pg/{uuid.uuid4().hex[:8]}")
    # Run every test in a directory of its own: a CLI call must never touch this repository
    # (apps:create adds a git remote to the repository it runs in).
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "kiln-home", api_port=free_port())


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 16 (with pgvector) from the pgserver package, for this test session."""
    pgserver = pytest.importorskip("pgserver")
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the session's PostgreSQL, as a SQLAlchemy URL."""
    import psycopg

    name = f"kiln_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.replace("postgresql://", "postgresql+psycopg://").replace(
        "/postgres?", f"/{name}?"
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def any_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Settings for each store: the embedded SQLite file and a real PostgreSQL."""
    if request.param == "sqlite":
        return settings
    return settings.model_copy(update={"database_url": request.getfixturevalue("postgres_url")})


@pytest.fixture
def store(any_settings: Settings) -> Iterator[Store]:
    opened = Store.open(any_settings)
    yield opened
    opened.close()


@pytest.fixture
def api(store: Store, any_settings: Settings) -> Iterator[TestClient]:
    """The API in-process over each store, authenticated with a fresh platform token."""
    token = store.create_token("tester").token
    with TestClient(create_app(Platform(any_settings, store=store))) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


class LiveApi:
    def __init__(self, settings: Settings, token: str, store: Store) -> None:
        self.settings = settings
        self.url = settings.api_url
        self.token = token
        self.store = store

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
def live_api(settings: Settings) -> Iterator[LiveApi]:
    """The real control plane served by uvicorn on a loopback port, in a thread."""
    store = Store.open(settings)
    token = store.create_token("test").token
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(Platform(settings, store=store)),
            host="127.0.0.1",
            port=settings.api_port,
            log_level="error",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "control plane did not start"
        time.sleep(0.02)
    yield LiveApi(settings, token, store)
    server.should_exit = True
    thread.join(timeout=10)
    store.close()
