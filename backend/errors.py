"""Domain errors. Services raise these; one handler maps them to HTTP, the CLI to exit codes."""

from __future__ import annotations

from typing import Any


class QuorumError(Exception):
    """Base class. ``status`` is the HTTP status, ``exit_code`` the CLI exit code."""

    status = 400
    exit_code = 2
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class ValidationFailed(QuorumError):
    status = 422
    code = "validation_failed"


class NotFound(QuorumError):
    status = 404
    exit_code = 3
    code = "not_found"


class Conflict(QuorumError):
    status = 409
    exit_code = 4
    code = "conflict"


class Unauthorized(QuorumError):
    status = 401
    exit_code = 5
    code = "unauthorized"


class Forbidden(QuorumError):
    status = 403
    exit_code = 5
    code = "forbidden"


class LeaseLost(Conflict):
    """The task is not (or no longer) leased by this moderator."""

    code = "lease_lost"
