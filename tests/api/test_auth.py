"""Every route but /healthz needs a valid platform token; a 401 says nothing about the resource."""

import pytest
from fastapi.testclient import TestClient

from kiln import tokens
from kiln.settings import Settings


@pytest.fixture
def any_settings(settings: Settings) -> Settings:
    """Authentication does not depend on the database: check it once, on SQLite."""
    return settings


ROUTES = [("GET", "/apps"), ("POST", "/apps"), ("GET", "/apps/echo"), ("DELETE", "/apps/echo"),
          ("GET", "/apps/echo/config"), ("PATCH", "/apps/echo/config"),
          ("GET", "/apps/echo/releases"), ("GET", "/apps/echo/releases/1"), ("GET", "/tokens"),
          ("POST", "/tokens"), ("DELETE", "/tokens/1"), ("GET", "/status")]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "header",
    [None, "Bearer nope", "Basic abc", "Bearer " + tokens.mint(tokens.PLATFORM_TOKEN)],
    ids=["missing", "malformed", "wrong-scheme", "unknown"],
)
def test_routes_refuse_without_a_valid_token(
    api: TestClient, method: str, path: str, header: str | None
) -> None:
    api.post("/apps", json={"name": "echo"})  # it exists: the 401 must not reveal that
    headers = {"Authorization": header} if header else {"Authorization": ""}
    response = api.request(method, path, headers=headers, json={"name": "x"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()["error"]
    assert body["code"] in ("missing_token", "invalid_token")
    assert "echo" not in body["message"]


def test_the_two_401s_are_identical_for_existing_and_missing_apps(api: TestClient) -> None:
    api.post("/apps", json={"name": "echo"})
    bad = {"Authorization": "Bearer " + tokens.mint(tokens.PLATFORM_TOKEN)}
    existing = api.get("/apps/echo/config", headers=bad)
    missing = api.get("/apps/ghost/config", headers=bad)
    assert existing.json() == missing.json()


def test_healthz_and_openapi_are_public(api: TestClient) -> None:
    api.headers.pop("Authorization")
    assert api.get("/healthz").json() == {"ok": True}
    spec = api.get("/openapi.json").json()
    assert "/apps/{app}/config" in spec["paths"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_a_revoked_token_stops_working(api: TestClient) -> None:
    made = api.post("/tokens", json={"name": "temp"}).json()
    other = {"Authorization": f"Bearer {made['token']}"}
    assert api.get("/apps", headers=other).status_code == 200
    assert api.delete(f"/tokens/{made['id']}").status_code == 200
    assert api.get("/apps", headers=other).status_code == 401
