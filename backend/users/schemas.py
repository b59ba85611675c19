from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from backend.limits import NoNulModel

#: A queue kind a moderator may work (``*``: every kind). Whether the kind exists is
#: checked by the router (``rules.service.known_queue_kinds``): a typo is refused.
QueueKind = Annotated[str, Field(pattern=r"^(\*|[A-Z][A-Z0-9_]{0,63})$")]


def _unique(kinds: list[str]) -> list[str]:
    seen = [k for n, k in enumerate(kinds) if k in kinds[:n]]
    if seen:
        raise ValueError(f"queue kind {seen[0]} is listed twice")
    return kinds


QueueKinds = Annotated[list[QueueKind], Field(max_length=100), AfterValidator(_unique)]


class UserCreate(NoNulModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: str = Field(pattern="^(moderator|analyst|admin)$")
    display_name: str | None = Field(default=None, max_length=200)
    password: str | None = Field(default=None, min_length=8, max_length=1000)
    queue_kinds: QueueKinds = Field(default_factory=list)


class UserRead(BaseModel):
    id: int
    username: str
    display_name: str | None
    role: str
    is_active: bool
    queue_kinds: list[str]
    created_at: datetime


class UserCreated(UserRead):
    token: str = Field(description="shown once; only its hash is stored")


class GrantsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue_kinds: QueueKinds


def checked_grants(kinds: list[str]) -> list[str]:
    """``kinds`` if they are well-formed grants (for callers without a request body: the
    CLI); else ``ValidationFailed`` with the first problem."""
    from pydantic import ValidationError

    from backend.errors import ValidationFailed

    try:
        return GrantsUpdate(queue_kinds=kinds).queue_kinds
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValidationFailed(f"queue kinds: {err['msg']}") from exc


class TokenRead(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="the token's first characters, to recognise it")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="default", min_length=1, max_length=100)


class TokenCreated(TokenRead):
    token: str = Field(description="shown once; only its hash is stored")


class RoleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = Field(pattern="^(moderator|analyst|admin)$")


class PasswordUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=8, max_length=1024)


class PasswordReset(BaseModel):
    password: str = Field(description="the new random password, shown once")
    sessions_ended: int


class SessionsEnded(BaseModel):
    sessions_ended: int
