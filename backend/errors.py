"""Domain errors. Services raise these; one handler maps them to HTTP, the CLI to exit codes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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


class PayloadTooLarge(QuorumError):
    status = 413
    code = "payload_too_large"


# ---------------------------------------------------------------- the error body in OpenAPI
class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer of the API has this body."""

    error: str = Field(description="a stable code, e.g. not_found, validation_failed")
    message: str = Field(description="one sentence saying what is wrong")
    details: Any = Field(default=None, description="more, when there is more: per-field or "
                                                   "per-row errors, positions")

#: The error answers every route may give, for ``include_router(..., responses=...)``.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in (
        (401, "no valid API token or web session"),
        (403, "the role or queue grants do not allow it"),
        (404, "no such object"),
        (409, "conflicts with the current state (a lease lost, a duplicate name)"),
        (413, "the request body is over QUORUM_LIMIT_MAX_BODY_BYTES"),
        (422, "the request is not valid: the message says which field and why"),
    )
}
