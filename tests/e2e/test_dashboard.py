"""Journey: the dashboard in a real browser (Debian's Chromium, driven by Playwright) against a
running platform: sign in, watch a deploy go live without reloading, see requests in the
chart, create and revoke a key, roll back from the page, sign out; a wrong token and a form
without its CSRF token refused."""

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.apps import EXAMPLES
from tests.support.platform import Platform

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("KILN_TEST_CHROMIUM") or shutil.which("chromium")
SCREENSHOT = os.environ.get("KILN_SCREENSHOT")  # where to save the app page (the README's)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM:
        pytest.skip("no Chromium: apt-get install chromium (scripts/test does, as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def test_a_deploy_traffic_keys_and_a_rollback_seen_and_done_from_the_dashboard(
    platform: Platform, browser: Any
) -> None:
    from playwright.sync_api import expect

    credentials = json.loads((platform.home / "credentials.json").read_text())
    base = credentials["api_url"]
    app = "dash"
    platform.kiln("apps:create", app)  # with the api-keys add-on: the page manages its keys
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    try:
        # A wrong token is refused, with the reason
        page.goto(f"{base}/ui/apps/{app}")
        expect(page).to_have_url(f"{base}/ui/login")
        page.fill("#token", "kiln_tok_not-a-token")
        page.press("#token", "Enter")
        expect(page.get_by_role("alert")).to_contain_text("invalid platform token")
        page.fill("#token", credentials["token"])
        page.keyboard.press("Tab")  # from the keyboard: the field, then the button
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Apps")).to_be_visible()
        assert "HttpOnly" in _cookie_flags(page)

        # A deploy goes live on the app's page, without a reload
        page.click(f"a[href='/ui/apps/{app}']")
        expect(page.locator("#app-status")).to_have_text("STOPPED")
        page.evaluate("window.kilnMarker = 'same page'")
        deployed = _in_background(lambda: platform.shell(
            "deploy", str(EXAMPLES / "echo"), "-a", app, "--artifact", "slug"))  # fmt: skip
        expect(page.locator("#app-status")).to_have_text("RUNNING", timeout=180_000)
        live = platform.ps(app)["release"]  # v1 attached the api-keys add-on; the deploy's next
        expect(page.locator("#app-release")).to_have_text(f"v{live}")
        expect(page.locator("#log")).to_contain_text("replica started in")
        assert page.evaluate("window.kilnMarker") == "same page"
        assert deployed().returncode == 0
        expect(page.locator(".builds")).to_contain_text("succeeded")
        page.click(f"a[href^='/ui/apps/{app}/builds/']")  # its log, whole once it is done
        expect(page.locator("#build-log")).to_contain_text("-----> Released v")
        expect(page.locator("#build-status")).to_have_text("succeeded")
        page.go_back()

        # A key made on the page lets requests in; they show in the chart
        page.fill("#key-name", "browser")
        page.click("text=Create key")
        key = page.locator("#new-key").inner_text().strip()
        url = f"{platform.app_url(app)}/"
        auth = {"Authorization": f"Bearer {key}"}
        platform.wait("the key to work", lambda: httpx.get(url, headers=auth).status_code == 200)
        for _ in range(20):
            assert httpx.get(url, headers=auth).status_code == 200
        page.goto(f"{base}/ui/apps/{app}")
        charted = lambda: int(page.get_attribute("#charts", "data-requests") or 0)  # noqa: E731
        platform.wait("the requests in the chart", lambda: charted() >= 20, timeout_s=30)
        expect(page.locator("#chart-total")).to_contain_text("requests")
        assert page.locator("#charts canvas").count() >= 3
        if SCREENSHOT:
            page.screenshot(path=SCREENSHOT, full_page=True)

        # On a phone: nothing wider than the screen but the tables, which scroll on their own
        page.set_viewport_size({"width": 390, "height": 844})
        wide = page.evaluate(
            "Array.from(document.querySelectorAll('body *')).filter(e => !e.closest('.scroll')"
            " && e.getBoundingClientRect().right > 391).map(e => e.tagName + '.' + e.className)"
        )
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, wide
        page.set_viewport_size({"width": 1280, "height": 900})

        # Revoked from the page: the app refuses the key within seconds
        page.click("button[aria-label^='Revoke browser']")
        expect(page.locator("table.keys")).to_contain_text("revoked")
        platform.wait("the key refused", lambda: httpx.get(url, headers=auth).status_code == 401,
                      timeout_s=15)  # fmt: skip

        # A form without the session's CSRF token is refused, even with the session's cookie
        forged = page.request.post(f"{base}/ui/apps/{app}/rollback", form={"version": "1"})
        assert forged.status == 403 and "CSRF" in forged.text()

        # Roll back from the page: a config change, then back to the deploy's code and config
        platform.kiln("config:set", "GREETING=changed", "-a", app)
        page.goto(f"{base}/ui/apps/{app}")
        expect(page.locator("#app-release")).to_have_text(f"v{live + 1}", timeout=120_000)
        page.click(f"button[aria-label='Roll back to v{live}']")
        expect(page.locator("#app-release")).to_have_text(f"v{live + 2}", timeout=120_000)
        expect(page.locator(f"#release-v{live + 2}")).to_contain_text(f"Rollback to v{live}")
        again = _new_key(platform, app)
        platform.wait("v1's config back", lambda: httpx.get(url, headers=again).json()
                      .get("hello") == "world", timeout_s=120)  # fmt: skip

        # Sign out: the session is over
        page.click("text=Sign out")
        expect(page).to_have_url(f"{base}/ui/login")
        page.goto(f"{base}/ui/apps/{app}")
        expect(page).to_have_url(f"{base}/ui/login")
    finally:
        page.close()
        platform.kiln("apps:destroy", app, "--confirm", app, ok=False)


def _cookie_flags(page: Any) -> str:
    cookie = next(c for c in page.context.cookies() if c["name"] == "kiln_session")
    return ("HttpOnly " if cookie["httpOnly"] else "") + cookie["sameSite"]


def _new_key(platform: Platform, app: str) -> dict[str, str]:
    key = json.loads(platform.kiln("keys:create", "-a", app, "--json").output)["key"]
    return {"Authorization": f"Bearer {key}"}


def _in_background(run: Callable[[], Any]) -> Callable[[], Any]:
    """Starts ``run`` in a thread; the function returned waits for its result."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(run()), daemon=True)
    thread.start()

    def wait() -> Any:
        thread.join(timeout=300)
        return result[0]

    return wait
