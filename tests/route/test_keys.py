"""The replica-side key check: format, digest, expiry, rate, usage."""

import time

from kiln import tokens
from kiln.models import KeyRule
from kiln.route.keys import KeyGuard


def guard_with(*rules: KeyRule) -> KeyGuard:
    guard = KeyGuard()
    guard.update({"public": False, "keys": [r.model_dump() for r in rules]})
    return guard


def rule_for(key: str, key_id: int = 1, **extra: object) -> KeyRule:
    return KeyRule(id=key_id, digest=tokens.digest(key), **extra)  # type: ignore[arg-type]


def test_public_apps_let_everything_through() -> None:
    guard = KeyGuard()
    guard.update({"public": True})
    assert guard.check(None).status == 200


def test_a_valid_key_passes_and_is_counted() -> None:
    key = tokens.mint(tokens.API_KEY)
    guard = guard_with(rule_for(key, 7))
    verdict = guard.check(f"Bearer {key}")
    assert (verdict.status, verdict.key_id) == (200, 7)
    guard.check(f"bearer {key}")
    usage = guard.take_usage()
    assert usage[7][0] == 2 and usage[7][1] > 0
    assert guard.take_usage() == {}


def test_refusals_say_why() -> None:
    key, other = tokens.mint(tokens.API_KEY), tokens.mint(tokens.API_KEY)
    guard = guard_with(rule_for(key))
    cases = {
        None: "missing_key",
        "Basic abc": "missing_key",
        "Bearer kiln_key_short": "invalid_key",
        f"Bearer {key[:-1]}{'A' if key[-1] != 'A' else 'B'}": "invalid_key",  # checksum fails
        f"Bearer {other}": "invalid_key",  # well-formed, but not this app's
        f"Bearer {tokens.mint(tokens.PLATFORM_TOKEN)}": "invalid_key",  # a platform token is no key
    }
    for header, code in cases.items():
        verdict = guard.check(header)
        assert (verdict.status, verdict.code) == (401, code), header


def test_an_expired_key_is_refused() -> None:
    key = tokens.mint(tokens.API_KEY)
    guard = guard_with(rule_for(key, expires_at=time.time() - 1))
    assert guard.check(f"Bearer {key}").code == "expired_key"


def test_over_the_rate_is_429_with_retry_after() -> None:
    key = tokens.mint(tokens.API_KEY)
    guard = guard_with(rule_for(key, rate_per_s=2.0))
    verdicts = [guard.check(f"Bearer {key}") for _ in range(4)]
    assert [v.status for v in verdicts] == [200, 200, 429, 429]
    assert verdicts[2].retry_after_s is not None and 0 < verdicts[2].retry_after_s <= 1


def test_a_revoked_key_stops_at_the_next_update() -> None:
    key = tokens.mint(tokens.API_KEY)
    guard = guard_with(rule_for(key))
    assert guard.check(f"Bearer {key}").status == 200
    guard.update({"public": False, "keys": []})
    assert guard.check(f"Bearer {key}").status == 401


def test_a_new_guard_refuses_until_it_has_rules() -> None:
    guard = KeyGuard()
    guard.public = False
    assert guard.check(f"Bearer {tokens.mint(tokens.API_KEY)}").status == 401
