"""The store, on both databases: apps, config releases, tokens."""

import threading
from pathlib import Path

import pytest

from kiln.errors import Conflict, InvalidInput, NotFound
from kiln.models import ReleaseStatus
from kiln.settings import Settings
from kiln.store import Store


def test_an_app_starts_at_release_v1(store: Store) -> None:
    app = store.create_app("echo", actor="alice")
    assert (app.name, app.release) == ("echo", 1)
    [release] = store.list_releases("echo")
    assert (release.version, release.description, release.actor) == (1, "Initial release", "alice")
    assert release.status is ReleaseStatus.SUCCEEDED


def test_duplicate_app_names_conflict_and_change_nothing(store: Store) -> None:
    store.create_app("echo", actor="a")
    with pytest.raises(Conflict, match="app echo already exists"):
        store.create_app("echo", actor="b")
    assert [a.name for a in store.list_apps()] == ["echo"]
    assert len(store.list_releases("echo")) == 1


@pytest.mark.parametrize("name", ["Echo", "../x", "a" * 60, "ab", "-echo", "echo-", "e_cho", ""])
def test_invalid_app_names_are_rejected(store: Store, name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid app name"):
        store.create_app(name, actor="a")
    assert store.list_apps() == []


def test_every_config_change_is_a_new_release(store: Store) -> None:
    store.create_app("chat", actor="a")
    first = store.update_config("chat", {"HF_TOKEN": "hf_1", "MODE": "fast"}, actor="a")
    second = store.update_config("chat", {"MODE": None, "HF_TOKEN": "hf_2"}, actor="b")
    assert (first.release.version, first.release.description) == (
        2,
        "Set HF_TOKEN, MODE config vars",
    )
    assert (second.release.version, second.release.description) == (
        3, "Set HF_TOKEN and remove MODE config vars",
    )  # fmt: skip
    assert store.get_config("chat") == {"HF_TOKEN": "hf_2"}
    assert [r.version for r in store.list_releases("chat")] == [3, 2, 1]
    assert store.get_release("chat", 2).config_keys == ["HF_TOKEN", "MODE"]


def test_a_config_change_that_changes_nothing_makes_no_release(store: Store) -> None:
    store.create_app("chat", actor="a")
    store.update_config("chat", {"A": "1"}, actor="a")
    again = store.update_config("chat", {"A": "1", "MISSING": None}, actor="a")
    assert not again.changed and again.release.version == 2


@pytest.mark.parametrize("key", ["1ABC", "A-B", "A B", "", "PORT"])
def test_config_keys_must_be_environment_names(store: Store, key: str) -> None:
    store.create_app("chat", actor="a")
    with pytest.raises(InvalidInput, match="config var"):
        store.update_config("chat", {key: "x"}, actor="a")
    assert len(store.list_releases("chat")) == 1


def test_missing_apps_and_releases_are_named(store: Store) -> None:
    with pytest.raises(NotFound, match="app ghost not found"):
        store.get_config("ghost")
    store.create_app("echo", actor="a")
    with pytest.raises(NotFound, match="app echo has no release v9"):
        store.get_release("echo", 9)


def test_destroying_an_app_removes_its_releases(store: Store) -> None:
    store.create_app("echo", actor="a")
    store.update_config("echo", {"A": "1"}, actor="a")
    store.destroy_app("echo")
    with pytest.raises(NotFound):
        store.list_releases("echo")
    store.create_app("echo", actor="a")  # the name is free again, history starts anew
    assert [r.version for r in store.list_releases("echo")] == [1]


def test_tokens_authenticate_until_revoked(store: Store) -> None:
    made = store.create_token("ci")
    found = store.authenticate(made.token)
    assert found is not None and found.id == made.id and found.last_used_at is not None
    assert made.token.startswith(made.prefix)
    store.revoke_token(made.id)
    assert store.authenticate(made.token) is None
    with pytest.raises(NotFound, match="no platform token with id"):
        store.revoke_token(made.id)


def test_malformed_or_unknown_tokens_do_not_authenticate(store: Store) -> None:
    made = store.create_token("ci")
    assert store.authenticate(made.token[:-1] + ("A" if made.token[-1] != "A" else "B")) is None
    assert store.authenticate("") is None
    assert store.authenticate("kiln_tok_" + "0" * 36) is None


def test_concurrent_config_changes_each_get_their_own_version(store: Store) -> None:
    store.create_app("busy", actor="a")
    errors: list[BaseException] = []

    def change(i: int) -> None:
        try:
            store.update_config("busy", {f"K{i}": str(i)}, actor="a")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=change, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [r.version for r in store.list_releases("busy")] == list(range(9, 0, -1))
    assert len(store.get_config("busy")) == 8


def test_data_survives_reopening(any_settings: Settings) -> None:
    first = Store.open(any_settings)
    first.create_app("keep", actor="a")
    first.update_config("keep", {"SECRET": "s3"}, actor="a")
    first.close()
    second = Store.open(any_settings)
    assert second.get_config("keep") == {"SECRET": "s3"}
    second.close()


def test_sqlite_is_the_default_under_kiln_home(settings: Settings) -> None:
    opened = Store.open(settings)
    assert opened.engine.dialect.name == "sqlite"
    assert Path(settings.home / "kiln.db").exists()
    opened.close()


def test_a_new_app_never_gets_the_sandbox_of_a_destroyed_one(store: Store) -> None:
    """SQLite hands the highest id out again once its row is gone; sandbox ids never repeat, so
    a new tenant never gets a uid whose files a destroyed app left behind."""
    store.create_app("first", actor="t")
    store.create_app("newest", actor="t")
    destroyed = store.sandbox_id("newest")
    store.destroy_app("newest")
    for name in ("newest", "other"):
        store.create_app(name, actor="t")
        assert store.sandbox_id(name) > destroyed
