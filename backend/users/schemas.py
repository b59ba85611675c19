from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: str = Field(pattern="^(moderator|analyst|admin)$")
    display_name: str | None = None
    password: str | None = Field(default=None, min_length=8)
    queue_kinds: list[str] = Field(default_factory=list)


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
    queue_kinds: list[str]
