"""API-key enforcement inside each replica (the ``api-keys`` add-on), with no extra hop.

A request needs ``Authorization: Bearer kiln_key_...`` (what OpenAI clients send). A malformed
key is refused by its checksum without a look-up; a well-formed one by its SHA-256 digest,
compared in constant time. Each key may have an expiry and a rate (a token bucket per replica).
The rules arrive through Serve's ``user_config`` (``reconfigure``), so a revoked key stops
working on every replica within about a second, without restarting a dyno.
"""

from __future__ import annotations

__all__ = ["KeyGuard", "Verdict"]

import hmac
import math
import time
from dataclasses import dataclass, field

from kiln import tokens
from kiln.models import KeyRule


@dataclass(frozen=True)
class Verdict:
    status: int  # 200: let it through
    code: str = ""
    message: str = ""
    key_id: int | None = None
    retry_after_s: float | None = None


@dataclass
class _Bucket:
    rate: float
    tokens: float
    at: float = field(default_factory=time.monotonic)

    def take(self) -> float | None:
        """None if a request may go now, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(max(self.rate, 1.0), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return (1 - self.tokens) / self.rate


_OK = Verdict(200)


class KeyGuard:
    """Checks requests against the app's keys; counts use per key."""

    def __init__(self) -> None:
        self.public = True
        self._rules: dict[str, KeyRule] = {}
        self._buckets: dict[int, _Bucket] = {}
        self.usage: dict[int, int] = {}
        self.last_used: dict[int, float] = {}

    def update(self, config: dict[str, object]) -> None:
        """Take the rules from a Serve ``user_config``: ``{"public": true}`` or ``{"keys": [...]}``."""
        self.public = bool(config.get("public", True))
        raw = config.get("keys") or []
        rules = [KeyRule.model_validate(r) for r in raw] if isinstance(raw, list) else []
        self._rules = {r.digest: r for r in rules}
        self._buckets = {
            r.id: self._buckets.get(r.id) or _Bucket(r.rate_per_s, max(r.rate_per_s, 1.0))
            for r in rules
            if r.rate_per_s
        }

    def check(self, authorization: str | None) -> Verdict:
        if self.public:
            return _OK
        scheme, _, secret = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secret:
            return Verdict(
                401,
                "missing_key",
                "this app needs an API key: send 'Authorization: Bearer KEY' (kiln keys:create makes one)",
            )
        secret = secret.strip()
        if not tokens.well_formed(secret, tokens.API_KEY):
            return Verdict(
                401, "invalid_key", "the API key is malformed (check for a typo or a cut-off paste)"
            )
        digest = tokens.digest(secret)
        rule = self._rules.get(digest)
        if rule is None or not hmac.compare_digest(rule.digest, digest):
            return Verdict(
                401,
                "invalid_key",
                "the API key is not valid for this app (revoked, or another app's)",
            )
        if rule.expires_at is not None and time.time() >= rule.expires_at:
            return Verdict(
                401,
                "expired_key",
                "the API key has expired; create a new one with kiln keys:create",
            )
        bucket = self._buckets.get(rule.id)
        if bucket is not None:
            wait = bucket.take()
            if wait is not None:
                return Verdict(
                    429,
                    "rate_limited",
                    f"over this key's rate of {rule.rate_per_s:g}/s",
                    rule.id,
                    wait,
                )
        self.usage[rule.id] = self.usage.get(rule.id, 0) + 1
        self.last_used[rule.id] = time.time()
        return Verdict(200, key_id=rule.id)

    def take_usage(self) -> dict[int, tuple[int, float]]:
        """Requests per key since the last call, with the time of the last one."""
        taken = {key: (count, self.last_used.get(key, 0.0)) for key, count in self.usage.items()}
        self.usage = {}
        return taken


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
