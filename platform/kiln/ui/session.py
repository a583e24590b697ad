"""Dashboard sessions: a platform token, checked once at sign-in, becomes a random session id in
an HttpOnly, SameSite=Strict cookie; the token stays on the server, is checked again on every
page (a revoked or expired token ends the session), and each session has its own CSRF token
that every form must send back.

>>> sessions = Sessions(clock=lambda: 0.0)
>>> sid, session = sessions.open("kiln_tok_secret")
>>> sessions.get(sid) is session and session.csrf_ok(session.csrf)
True
"""

from __future__ import annotations

__all__ = ["COOKIE", "LOGIN_COOKIE", "Session", "Sessions"]

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "kiln_session"
LOGIN_COOKIE = "kiln_login"  # the sign-in form's own CSRF token (double submit)
IDLE_S = 8 * 3600.0


@dataclass
class Session:
    secret: str  # the platform token: never sent to the browser
    csrf: str
    seen: float

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and secrets.compare_digest(sent or "", self.csrf)


class Sessions:
    """Signed-in browsers, in memory: a restart of the control plane signs everyone out.
    A session idle for ``idle_s`` ends; at most ``limit`` live at once (the oldest go first)."""

    def __init__(
        self, idle_s: float = IDLE_S, limit: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.idle_s = idle_s
        self.limit = limit
        self.clock = clock
        self._open: dict[str, Session] = {}

    def open(self, secret: str) -> tuple[str, Session]:
        while len(self._open) >= self.limit:
            self._open.pop(next(iter(self._open)))
        sid = secrets.token_urlsafe(32)
        session = self._open[sid] = Session(secret, secrets.token_urlsafe(32), self.clock())
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        session = self._open.get(sid or "")
        if session is None:
            return None
        now = self.clock()
        if now - session.seen > self.idle_s:
            self.close(sid)
            return None
        session.seen = now
        return session

    def close(self, sid: str | None) -> None:
        self._open.pop(sid or "", None)
