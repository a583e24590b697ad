"""Who may do what: a platform token's scope against what a request asks (a pure policy), and the
throttle on failed sign-ins.

    >>> from datetime import datetime, UTC
    >>> deployer = TokenInfo(id=2, name="ci", prefix="kiln_tok_x", created_at=datetime.now(UTC),
    ...                      scope=TokenScope.DEPLOY, apps=["chat"])
    >>> refusal(deployer, needed("PATCH", "/apps/{app}/config"), "chat") is None
    True
    >>> print(refusal(deployer, needed("DELETE", "/apps/{app}"), "chat"))
    the token ci (deploy) may not do this: it needs an admin token
"""

from __future__ import annotations

__all__ = ["AuthThrottle", "Level", "needed", "refusal"]

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from kiln.models import TokenInfo, TokenScope


class Level(enum.IntEnum):
    """What a request needs, from least to most."""

    READ = 1
    DEPLOY = 2
    ADMIN = 3


_GRANTS = {TokenScope.READ: Level.READ, TokenScope.DEPLOY: Level.DEPLOY,
           TokenScope.ADMIN: Level.ADMIN}  # fmt: skip
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
# Routes outside any one app that every valid token may call (what they show is its apps only).
_ANY_TOKEN = frozenset({("GET", "/apps"), ("GET", "/status")})
# App routes above their method's usual level: destroying an app is for admins; config values
# are secrets, so reading them takes what setting them does.
_RAISED = {("DELETE", "/apps/{app}"): Level.ADMIN, ("GET", "/apps/{app}/config"): Level.DEPLOY}


def needed(method: str, route: str) -> Level:
    """The level a call needs, from its method and route template (``/apps/{app}/config``)."""
    if (method, route) in _RAISED:
        return _RAISED[(method, route)]
    if "{app}" in route:
        return Level.READ if method in _SAFE else Level.DEPLOY
    if (method, route) in _ANY_TOKEN:
        return Level.READ
    return Level.ADMIN  # tokens, creating apps, the cluster's nodes, models and metrics


def refusal(token: TokenInfo, level: Level, app: str | None) -> str | None:
    """Why ``token`` may not make a call needing ``level`` (on ``app``), or None if it may."""
    granted = _GRANTS[token.scope]
    who = f"the token {token.name} ({token.scope})"
    if granted < level:
        return f"{who} may not do this: it needs {'an admin' if level is Level.ADMIN else 'a deploy'} token"
    if app is not None and token.scope is not TokenScope.ADMIN and app not in token.apps:
        return f"{who} is for {', '.join(token.apps)} only, not {app}"
    return None


@dataclass
class _Bucket:
    tokens: float
    at: float


class AuthThrottle:
    """Failed sign-ins per client address: ``burst`` at once, then one per ``every_s``. Past
    that the address gets 429 with the wait until its next try, right or wrong, so guessing
    tokens stays hopeless (a token has 178 random bits; this stops the noise and the load)."""

    def __init__(
        self,
        burst: int = 20,
        every_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        self.burst = burst
        self.every_s = every_s
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: dict[str, _Bucket] = {}

    def wait_s(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 if it may now."""
        bucket = self._refill(client)
        return 0.0 if bucket is None or bucket.tokens >= 1 else (1 - bucket.tokens) * self.every_s

    def failed(self, client: str) -> None:
        bucket = self._refill(client)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:  # an address flood: forget the oldest
                self._buckets.pop(next(iter(self._buckets)))
            bucket = self._buckets[client] = _Bucket(float(self.burst), self.clock())
        bucket.tokens = max(bucket.tokens - 1, 0.0)

    def _refill(self, client: str) -> _Bucket | None:
        bucket = self._buckets.get(client)
        if bucket is None:
            return None
        now = self.clock()
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) / self.every_s)
        bucket.at = now
        if bucket.tokens >= self.burst:  # fully recovered: nothing to remember
            del self._buckets[client]
            return None
        return bucket
