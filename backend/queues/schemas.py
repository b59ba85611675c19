from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class QueueRead(BaseModel):
    name: str
    kind: str
    day: date
    chunk: int
    priority: int
    audience: str
    total: int
    done: int
    pending: int
    leased: int
    moved_to_crowd: int = Field(0, description="tasks moved to the crowd because moderators' "
                                "day was full (QUORUM_MODERATOR_DAILY_CAPACITY)")
    progress: str = Field(description="done / total")


class CapacityRead(BaseModel):
    """Moderators' day against ``QUORUM_MODERATOR_DAILY_CAPACITY`` (0: no limit)."""

    capacity: int
    done_today: int = Field(description="moderator tasks done since the day began")
    held: int = Field(description="leased tasks, and expired leases their holder may answer")
    fixed_pending: int = Field(description="pending tasks of kinds that never overflow")
    overflowable_pending: int = Field(description="pending tasks of "
                                      "QUORUM_MODERATOR_OVERFLOW_FROM kinds")
    room: int = Field(description="overflowable tasks moderators have room for today")
    moved_today: int = Field(description="tasks moved to the crowd today")
    overflow_from: list[str]
    overflow_kind: str


class LeaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: str | None = Field(default=None, description="a queue name; default: any you may work")
    lease_seconds: int | None = Field(default=None, ge=10, le=3600)


class TaskRead(BaseModel):
    id: int
    queue: str
    queue_kind: str
    task_type: str
    state: str
    item_id: int
    payload: dict[str, Any] | None
    leased_at: datetime | None
    lease_expires_at: datetime | None


class LeaseResponse(BaseModel):
    task: TaskRead | None
    item: dict[str, Any] | None = None
    message: str | None = None


class VerdictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=50)
    comment: str | None = Field(default=None, max_length=5000)
    time_spent_ms: int | None = Field(default=None, ge=0)


class VerdictResponse(BaseModel):
    task_id: int
    item_id: int
    label: str
    event_id: int | None
    judgment_id: int
    replayed: bool
