"""The dashboard's pages and forms, over the API app with a fake Serve: sign-in, sessions, CSRF,
scopes, what each page shows. The journey in a real browser is tests/e2e/test_dashboard.py."""

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kiln.api import create_app
from kiln.control.platform import Platform
from kiln.models import LogRecord, LogSource, TokenScope
from kiln.route.figures import Answer, router_line
from kiln.run.logs import append_records
from kiln.settings import Settings
from kiln.store import Store
from tests.run.test_reconciler import running_apps


@pytest.fixture
def dashboard(settings: Settings) -> Iterator[tuple[TestClient, Store]]:
    store, reconciler = running_apps(settings, {"web": "", "other": ""})
    store.update_config("web", {"DATABASE_URL": "postgres://user:hunter2@db/web"}, actor="t")
    with TestClient(create_app(Platform(settings, store=store, reconciler=reconciler))) as client:
        yield client, store


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html[:400]
    return match.group(1)


def sign_in(client: TestClient, token: str) -> str:
    """Signs in; the page's CSRF token."""
    form = client.get("/ui/login")
    signed = client.post("/ui/login", data={"token": token, "csrf": csrf_of(form.text)})
    assert signed.status_code == 200 and signed.url.path == "/ui/", signed.text[:300]
    return csrf_of(signed.text)


def test_pages_need_a_session_and_a_wrong_token_is_refused(
    dashboard: tuple[TestClient, Store],
) -> None:
    client, store = dashboard
    assert client.get("/ui/apps/web", follow_redirects=False).headers["location"] == "/ui/login"
    form = client.get("/ui/login")
    assert (
        "HttpOnly" in form.headers["set-cookie"] and "SameSite=strict" in form.headers["set-cookie"]
    )
    wrong = client.post("/ui/login", data={"token": "kiln_tok_nope", "csrf": csrf_of(form.text)})
    assert wrong.status_code == 401 and "invalid platform token" in wrong.text
    forged = client.post("/ui/login", data={"token": store.create_token("a").token, "csrf": "x"})
    assert forged.status_code == 403 and "expired or came from another site" in forged.text
    assert "kiln_session" not in client.cookies


def test_signed_in_the_apps_page_shows_state_release_replicas_and_traffic(
    dashboard: tuple[TestClient, Store],
    settings: Settings,
) -> None:
    client, store = dashboard
    import time

    now = time.time()
    append_records(settings.log_dir, "web", [
        LogRecord(ts=now - 5, source=LogSource.ROUTER, process="dyno.a", release=1,
                  line=router_line("GET", "/", Answer(status, 40.0)))
        for status in (200, 200, 200, 503)
    ])  # fmt: skip
    sign_in(client, store.create_token("admin").token)
    page = client.get("/ui/").text
    row = page[page.index('href="/ui/apps/web"') :]
    row = row[: row.index("</tr>")]
    assert 'class="badge' in row and re.search(r"<td>v\d+</td>", row)
    assert "<td>25.0%</td>" in row and "<td>40 ms</td>" in row  # one 503 in four; their p95
    cookie = client.cookies.get("kiln_session")
    assert cookie and len(cookie) > 30


def test_the_app_page_masks_config_and_a_read_token_sees_only_its_app_without_buttons(
    dashboard: tuple[TestClient, Store],
) -> None:
    client, store = dashboard
    sign_in(client, store.create_token("r", scope=TokenScope.READ, apps=["web"]).token)
    page = client.get("/ui/apps/web")
    assert page.status_code == 200 and "DATABASE_URL" in page.text
    assert "hunter2" not in page.text and "needs a deploy token" in page.text
    assert "Roll back" not in page.text and "Create key" not in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert 'href="/ui/apps/other"' not in client.get("/ui/").text
    assert client.get("/ui/apps/other").status_code == 403
    assert client.get("/ui/nodes").status_code == 403  # the cluster is for admins


def test_forms_need_the_sessions_csrf_token_and_sign_out_ends_the_session(
    dashboard: tuple[TestClient, Store],
) -> None:
    client, store = dashboard
    csrf = sign_in(client, store.create_token("admin").token)
    refused = client.post("/ui/apps/web/rollback", data={"version": "1"})
    assert refused.status_code == 403 and "CSRF token is missing or wrong" in refused.text
    wrong = client.post("/ui/apps/web/rollback", data={"version": "1", "csrf": "guess"})
    assert wrong.status_code == 403
    out = client.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    assert client.get("/ui/", follow_redirects=False).status_code == 303


def test_a_revoked_token_ends_its_session(dashboard: tuple[TestClient, Store]) -> None:
    client, store = dashboard
    token = store.create_token("soon-gone")
    sign_in(client, token.token)
    store.revoke_token(token.id)
    assert client.get("/ui/", follow_redirects=False).headers["location"] == "/ui/login"
