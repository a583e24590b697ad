"""Config values are encrypted at rest: never in the database file, decryptable only with the key."""

import sqlite3
import stat

import pytest
from cryptography.fernet import Fernet

from kiln.errors import KilnError
from kiln.settings import Settings
from kiln.store import Store

SECRET = "sk-live-THIS-MUST-NOT-LEAK-0123456789"


def test_secret_bytes_are_not_in_the_sqlite_files(settings: Settings) -> None:
    store = Store.open(settings)
    store.create_app("vault", actor="a")
    store.update_config("vault", {"OPENAI_API_KEY": SECRET}, actor="a")
    store.close()
    raw = b"".join(p.read_bytes() for p in settings.home.glob("kiln.db*"))
    assert SECRET.encode() not in raw
    with sqlite3.connect(settings.home / "kiln.db") as db:
        [(sealed,)] = db.execute("SELECT config_sealed FROM releases WHERE version = 2").fetchall()
    assert sealed.startswith("gAAAA")  # a Fernet token


def test_secret_is_not_in_postgres(postgres_url: str, settings: Settings) -> None:
    import psycopg

    store = Store.open(settings.model_copy(update={"database_url": postgres_url}))
    store.create_app("vault", actor="a")
    store.update_config("vault", {"OPENAI_API_KEY": SECRET}, actor="a")
    store.close()
    with psycopg.connect(postgres_url.replace("+psycopg", "")) as db:
        dump = str(db.execute("SELECT * FROM releases").fetchall())
    assert SECRET not in dump


def test_the_key_file_is_private(settings: Settings) -> None:
    Store.open(settings).close()
    key_file = settings.home / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_kiln_secret_key_rotation(settings: Settings) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    store = Store.open(Settings(home=settings.home, secret_key=old))
    store.create_app("vault", actor="a")
    store.update_config("vault", {"K": "v"}, actor="a")
    store.close()
    rotated = Store.open(Settings(home=settings.home, secret_key=f"{new},{old}"))
    assert rotated.get_config("vault") == {"K": "v"}
    rotated.close()
    wrong = Store.open(Settings(home=settings.home, secret_key=new))
    with pytest.raises(KilnError, match="cannot be decrypted") as caught:
        wrong.get_config("vault")
    assert "v" not in caught.value.message.split()
    wrong.close()


def test_invalid_secret_key_is_explained(settings: Settings) -> None:
    with pytest.raises(KilnError, match="not a valid Fernet key"):
        Store.open(Settings(home=settings.home, secret_key="not-a-key"))
