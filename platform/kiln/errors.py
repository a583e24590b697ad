"""The errors Kiln raises: one base class, each message naming what, where, and what to do next.

The tree::

    KilnError                  every error Kiln raises on purpose (code, message, HTTP status)
    ├── InvalidInput           bad input from a user: a name, a key, a value (400)
    │   └── ManifestError      a kiln.toml that does not parse or validate (carries each problem)
    ├── Unauthorized           a missing, malformed or unknown platform token (401)
    ├── Forbidden              a valid token that may not do this: its scope, its apps, expiry (403)
    ├── NotFound               an app, release or token that does not exist (404)
    ├── Conflict               a name already taken, a state that forbids the action (409)
    ├── RateLimited            too many attempts (failed sign-ins); says when to retry (429)
    └── Unavailable            the control plane or a component cannot be reached (503)

The API turns a ``KilnError`` into ``{"error": {"code": ..., "message": ...}}`` with its status; the
CLI turns that body back into the same ``KilnError`` and prints its message, so both say the same.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "KilnError",
    "ManifestError",
    "ManifestProblem",
    "NotFound",
    "RateLimited",
    "Unauthorized",
    "Unavailable",
]

from dataclasses import dataclass


class KilnError(Exception):
    """The base of every error Kiln raises on purpose.

    ``code`` is stable (scripts may match on it); ``message`` is for people.
    """

    status: int = 500
    default_code: str = "internal"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    def __str__(self) -> str:
        return self.message


class InvalidInput(KilnError):
    status = 400
    default_code = "invalid_input"


class Unauthorized(KilnError):
    status = 401
    default_code = "unauthorized"


class Forbidden(KilnError):
    status = 403
    default_code = "forbidden"


class NotFound(KilnError):
    status = 404
    default_code = "not_found"


class Conflict(KilnError):
    status = 409
    default_code = "conflict"


class RateLimited(KilnError):
    status = 429
    default_code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class Unavailable(KilnError):
    status = 503
    default_code = "unavailable"


@dataclass(frozen=True)
class ManifestProblem:
    """One thing wrong with a manifest: where it is and what is wrong."""

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where} {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ManifestError(InvalidInput):
    """A ``kiln.toml`` that does not parse or validate; ``problems`` lists each thing wrong."""

    default_code = "invalid_manifest"

    def __init__(self, problems: list[ManifestProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    @property
    def fields(self) -> list[str]:
        return [p.field for p in self.problems if p.field]
