"""The api-keys add-on through the API: attached by default, keys made once, only digests kept."""

import sqlite3

import pytest
from fastapi.testclient import TestClient

from kiln.errors import InvalidInput
from kiln.manifest.units import parse_duration, parse_rate
from kiln.settings import Settings


@pytest.fixture
def any_settings(settings: Settings) -> Settings:
    return settings


def test_apps_get_api_keys_unless_public(api: TestClient) -> None:
    api.post("/apps", json={"name": "private"})
    api.post("/apps", json={"name": "demo", "public": True})
    assert [a["kind"] for a in api.get("/apps/private/addons").json()] == ["api-keys"]
    assert api.get("/apps/demo/addons").json() == []


def test_keys_are_shown_once_and_stored_as_digests(api: TestClient, settings: Settings) -> None:
    api.post("/apps", json={"name": "private"})
    made = api.post(
        "/apps/private/keys", json={"name": "ci", "expires_in_s": 3600, "rate_per_s": 5}
    ).json()
    assert made["key"].startswith("kiln_key_") and made["prefix"] in made["key"]
    listed = api.get("/apps/private/keys").json()
    assert [k["name"] for k in listed] == ["ci"] and "key" not in listed[0]
    assert listed[0]["rate_per_s"] == 5 and listed[0]["expires_at"] is not None
    raw = b"".join(p.read_bytes() for p in settings.home.glob("kiln.db*"))
    assert made["key"].encode() not in raw
    with sqlite3.connect(settings.home / "kiln.db") as db:
        dump = "\n".join(db.iterdump())
    assert made["key"] not in dump


def test_revoking_by_prefix(api: TestClient) -> None:
    api.post("/apps", json={"name": "private"})
    made = api.post("/apps/private/keys", json={"name": "ci"}).json()
    revoked = api.delete(f"/apps/private/keys/{made['prefix']}").json()
    assert revoked["revoked"] is True
    again = api.delete(f"/apps/private/keys/{made['prefix']}")
    assert again.status_code == 404 and "no active key" in again.json()["error"]["message"]


def test_addons_attach_and_detach(api: TestClient) -> None:
    api.post("/apps", json={"name": "demo", "public": True})
    created = api.post("/apps/demo/addons", json={"kind": "api-keys"})
    assert created.status_code == 201 and created.json()["name"] == "api-keys"
    assert (
        api.post("/apps/demo/addons", json={"kind": "api-keys"}).json()["error"]["code"]
        == "addon_exists"
    )
    unknown = api.post("/apps/demo/addons", json={"kind": "redis"})
    assert unknown.status_code == 422
    assert "'api-keys' or 'vector-store'" in unknown.json()["error"]["message"]
    assert api.get("/apps/demo/addons/api-keys").json()["status"] == "enforced on every replica"
    assert api.delete("/apps/demo/addons/api-keys").json()["status"] == "destroyed"
    assert api.get("/apps/demo/addons").json() == []


def test_the_key_mini_languages() -> None:
    assert parse_duration("30d") == 30 * 86400 and parse_duration("90m") == 5400
    assert parse_rate("10/s") == 10 and parse_rate("600/m") == 10
    for bad in ("30 days", "0d", "-1h"):
        with pytest.raises(InvalidInput, match="duration like 90m"):
            parse_duration(bad)
    with pytest.raises(InvalidInput, match="like 10/s"):
        parse_rate("ten per second")
