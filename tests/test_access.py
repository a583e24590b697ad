"""Token scopes, from the side of a token holder reaching past its grant, and the throttle on
failed sign-ins."""

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kiln import tokens
from kiln.access import AuthThrottle, Level, needed
from kiln.models import TokenScope
from kiln.settings import Settings
from kiln.store import Store


@pytest.fixture
def any_settings(settings: Settings) -> Settings:
    """Authorisation does not depend on the database: check it once, on SQLite."""
    return settings


@pytest.fixture
def two_apps(api: TestClient) -> TestClient:
    for name in ("echo", "other"):
        assert api.post("/apps", json={"name": name, "public": True}).status_code == 201
    return api


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def made(store: Store, scope: TokenScope, *apps: str, expires_in_s: float | None = None) -> str:
    return store.create_token("t", scope=scope, apps=apps, expires_in_s=expires_in_s).token


def routes(api: TestClient) -> Iterator[tuple[str, str]]:
    """Every (method, route template) of the API, from its OpenAPI document."""
    for path, operations in api.get("/openapi.json").json()["paths"].items():
        for method in operations:
            yield method.upper(), path


def test_a_deploy_token_works_on_its_app_only(two_apps: TestClient, store: Store) -> None:
    token = bearer(made(store, TokenScope.DEPLOY, "echo"))
    assert (
        two_apps.patch("/apps/echo/config", json={"vars": {"A": "1"}}, headers=token).status_code
        == 200
    )
    assert two_apps.get("/apps/echo/config", headers=token).json()["A"] == "1"
    refused = two_apps.patch("/apps/other/config", json={"vars": {"A": "1"}}, headers=token)
    assert refused.status_code == 403
    assert refused.json()["error"] == {
        "code": "out_of_scope", "message": "the token t (deploy) is for echo only, not other",
    }  # fmt: skip
    assert [a["name"] for a in two_apps.get("/apps", headers=token).json()] == ["echo"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/apps/echo"), ("POST", "/apps"), ("GET", "/tokens"), ("POST", "/tokens"),
     ("DELETE", "/tokens/1"), ("GET", "/metrics"), ("POST", "/models/prune"), ("GET", "/nodes")],
)  # fmt: skip
def test_a_deploy_token_cannot_do_what_admins_do(
    two_apps: TestClient, store: Store, method: str, path: str
) -> None:
    token = bearer(made(store, TokenScope.DEPLOY, "echo"))
    response = two_apps.request(method, path, headers=token, json={"name": "x"})
    assert response.status_code == 403
    assert response.json()["error"]["message"] == (
        "the token t (deploy) may not do this: it needs an admin token"
    )


def test_a_token_cannot_mint_itself_a_wider_one(two_apps: TestClient, store: Store) -> None:
    token = bearer(made(store, TokenScope.DEPLOY, "echo", "other"))
    wider = two_apps.post("/tokens", json={"name": "root"}, headers=token)
    assert wider.status_code == 403 and len(store.list_tokens()) == 2


def test_a_read_token_changes_nothing_on_any_route(two_apps: TestClient, store: Store) -> None:
    token = bearer(made(store, TokenScope.READ, "echo"))
    assert two_apps.get("/apps/echo/releases", headers=token).status_code == 200
    assert two_apps.get("/apps/echo/config", headers=token).status_code == 403  # secrets
    changes = [(m, p) for m, p in routes(two_apps) if "{app}" in p and m not in ("GET", "HEAD")]
    assert len(changes) >= 9
    for method, path in changes:
        url = path.replace("{app}", "echo").replace("{name}", "n").replace("{prefix}", "p")
        response = two_apps.request(method, url, headers=token, json={})
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["message"].startswith("the token t (read) may not do this")


def test_every_route_outside_an_app_is_for_admins_unless_listed(two_apps: TestClient) -> None:
    outside = [(m, p) for m, p in routes(two_apps) if "{app}" not in p and p != "/healthz"]
    assert len(outside) >= 8
    for method, path in outside:
        allowed_to_all = (method, path) in {("GET", "/apps"), ("GET", "/status")}
        assert (needed(method, path) is Level.READ) == allowed_to_all, path


def test_an_expired_token_is_refused_with_the_reason(two_apps: TestClient, store: Store) -> None:
    token = bearer(made(store, TokenScope.ADMIN, expires_in_s=0.05))
    time.sleep(0.1)
    response = two_apps.get("/apps", headers=token)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "token_expired"
    assert "expired at" in response.json()["error"]["message"]


def test_scoped_tokens_must_name_existing_apps(api: TestClient) -> None:
    assert api.post("/tokens", json={"name": "x", "scope": "deploy"}).status_code == 400
    assert (
        api.post("/tokens", json={"name": "x", "scope": "admin", "apps": ["a"]}).status_code == 400
    )
    assert (
        api.post("/tokens", json={"name": "x", "scope": "read", "apps": ["ghost"]}).status_code
        == 404
    )


def test_guessing_tokens_is_throttled_per_address(two_apps: TestClient, store: Store) -> None:
    statuses = [
        two_apps.get("/apps", headers=bearer(tokens.mint(tokens.PLATFORM_TOKEN))).status_code
        for _ in range(25)
    ]
    assert statuses[:20] == [401] * 20 and statuses[-1] == 429
    # Right or wrong, the address now waits: a guess that happened to be right learns nothing.
    response = two_apps.get("/apps")
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "too_many_failures"


def test_the_throttle_recovers_and_forgets() -> None:
    now = [0.0]
    throttle = AuthThrottle(burst=3, every_s=2.0, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.wait_s("a") == 0
        throttle.failed("a")
    assert throttle.wait_s("a") == pytest.approx(2.0)
    assert throttle.wait_s("b") == 0  # others are not affected
    now[0] = 2.0
    assert throttle.wait_s("a") == 0
    now[0] = 100.0
    throttle.wait_s("a")
    assert throttle._buckets == {}
