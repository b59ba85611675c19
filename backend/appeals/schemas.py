from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AppealCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=5000,
                        description="why the decision is appealed, in the appellant's words")
    appellant: str | None = Field(None, max_length=200,
                                  description="who appeals (the seller's id on the platform)")
    external_ref: str | None = Field(
        None, max_length=200,
        description="the platform's id for this appeal: sending it again returns the same "
                    "appeal (idempotent)")


class AppealRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    item_id: int
    event_id: int
    state: str
    reason: str
    appellant: str | None
    external_ref: str | None
    task_id: int | None
    outcome_event_id: int | None
    outcome_reasons: str | None
    created_at: datetime
    decided_at: datetime | None


class StatementPage(BaseModel):
    statements: list[dict[str, Any]]
    #: pass as ``after`` for the next page; null on the last one
    next_after: int | None
