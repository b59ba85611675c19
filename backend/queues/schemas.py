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
    progress: str = Field(description="done / total")


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
