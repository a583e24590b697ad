"""Journey: API keys guard an app's URL, and a revoked key stops working within seconds."""

import time
from collections.abc import Callable

import httpx
import pytest

from tests.support.apps import EXAMPLES
from tests.support.platform import Platform, deploy

pytestmark = pytest.mark.integration


def test_api_keys_guard_the_url_and_revocation_is_fast(
    platform: Platform, fresh_app: Callable[[Platform, str], str]
) -> None:
    import json

    app = "guarded"
    platform.kiln("apps:create", app)  # not --public: the api-keys add-on is attached
    try:
        deploy(platform, EXAMPLES / "echo", app, "--artifact", "slug")
        url = f"{platform.app_url(app)}/"
        assert httpx.get(url).status_code == 401
        key = json.loads(platform.kiln("keys:create", "-a", app, "--name", "ci", "--json").output)[
            "key"
        ]
        other_app = fresh_app(platform, "other-app")
        other_key = json.loads(platform.kiln("keys:create", "-a", other_app, "--json").output)[
            "key"
        ]
        auth = {"Authorization": f"Bearer {key}"}
        platform.wait(
            "the key to work",
            lambda: httpx.get(url, headers=auth).status_code == 200,
            timeout_s=10,
            every_s=0.1,
        )
        assert httpx.get(url, headers={"Authorization": f"Bearer {other_key}"}).status_code == 401
        assert (
            httpx.get(url, headers={"Authorization": "Bearer kiln_key_garbage"}).json()["error"][
                "code"
            ]
            == "invalid_key"
        )
        for _ in range(5):
            assert httpx.get(url, headers=auth).status_code == 200
        platform.kiln("keys:revoke", key[:15], "-a", app)
        revoked = time.monotonic()
        platform.wait(
            "revocation",
            lambda: httpx.get(url, headers=auth).status_code == 401,
            timeout_s=10,
            every_s=0.05,
        )
        assert time.monotonic() - revoked < 2.0
        listed = platform.wait(
            "usage to be counted",
            lambda: (
                (keys := json.loads(platform.kiln("keys", "-a", app, "--json").output))
                and keys[0]["requests"] >= 6
                and keys
            ),
            timeout_s=40,  # replicas ship use every 2 s; the ledger counts it every 5 s
        )
        assert listed[0]["revoked"] is True and listed[0]["last_used_at"] is not None
        logs = platform.kiln("logs", "-a", app, "-n", "1000").output
        assert (
            key not in logs
            and key not in (platform.home / "logs" / "apps" / f"{app}.jsonl").read_text()
        )
    finally:
        platform.kiln("apps:destroy", app, "--confirm", app, ok=False)
