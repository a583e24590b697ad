"""The API's apps, config, releases and tokens, over both stores."""

from fastapi.testclient import TestClient


def test_app_lifecycle(api: TestClient) -> None:
    created = api.post("/apps", json={"name": "chat"})
    assert created.status_code == 201 and created.json()["release"] == 1
    assert [a["name"] for a in api.get("/apps").json()] == ["chat"]
    assert api.get("/apps/chat").json()["name"] == "chat"
    assert api.delete("/apps/chat").status_code == 204
    assert api.get("/apps").json() == []


def test_errors_are_json_with_a_stable_code(api: TestClient) -> None:
    api.post("/apps", json={"name": "chat"})
    cases = [
        (api.post("/apps", json={"name": "chat"}), 409, "app_exists", "app chat already exists"),
        (
            api.post("/apps", json={"name": "../x"}),
            400,
            "invalid_app_name",
            "invalid app name '../x'",
        ),
        (api.get("/apps/ghost"), 404, "app_not_found", "app ghost not found"),
        (api.get("/apps/chat/releases/7"), 404, "release_not_found", "app chat has no release v7"),
        (api.patch("/apps/ghost/config", json={"vars": {"A": "1"}}), 404, "app_not_found", "ghost"),
        (
            api.patch("/apps/chat/config", json={"vars": {"1A": "x"}}),
            400,
            "invalid_config_key",
            "1A",
        ),
        (api.post("/apps", json={"title": "x"}), 422, "invalid_request", "name: Field required"),
    ]
    for response, status, code, text in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code and text in error["message"], error


def test_config_changes_make_releases(api: TestClient) -> None:
    api.post("/apps", json={"name": "chat"})
    change = api.patch("/apps/chat/config", json={"vars": {"A": "1", "B": "2"}}).json()
    assert change["changed"] and change["release"]["version"] == 2
    assert change["release"]["actor"] == "tester"
    change = api.patch("/apps/chat/config", json={"vars": {"A": None}}).json()
    assert (
        change["config"] == {"B": "2"}
        and change["release"]["description"] == "Remove A config vars"
    )
    assert api.get("/apps/chat/config").json() == {"B": "2"}
    versions = [r["version"] for r in api.get("/apps/chat/releases").json()]
    assert versions == [3, 2, 1]
    assert api.get("/apps/chat/releases/2").json()["config_keys"] == ["A", "B"]


def test_config_values_never_appear_in_release_listings(api: TestClient) -> None:
    api.post("/apps", json={"name": "chat"})
    api.patch("/apps/chat/config", json={"vars": {"TOKEN": "very-secret-value"}})
    assert "very-secret-value" not in api.get("/apps/chat/releases").text
    assert "very-secret-value" not in api.get("/apps/chat/releases/2").text


def test_tokens_are_listed_without_secrets(api: TestClient) -> None:
    made = api.post("/tokens", json={"name": "ci"}).json()
    assert made["token"].startswith("kiln_tok_")
    listing = api.get("/tokens").text
    assert made["token"] not in listing and made["prefix"] in listing


def test_status(api: TestClient) -> None:
    api.post("/apps", json={"name": "chat"})
    status = api.get("/status").json()
    assert status["apps"] == 1 and status["store"] in ("sqlite", "postgresql")
