from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SubscriptionCreate(BaseModel):
    url: str = Field(description="http(s) URL the decisions are POSTed to")
    sources: list[str] = Field(default_factory=list,
                               description="only items of these sources (empty: all)")
    labels: list[str] = Field(default_factory=list,
                              description="only decisions with these labels (empty: all)")


class SubscriptionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    url: str
    sources: list[str]
    labels: list[str]
    is_active: bool
    created_at: datetime


class SubscriptionCreated(SubscriptionRead):
    secret: str = Field(description="HMAC-SHA256 key of X-Quorum-Signature (shown once)")


class DeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    subscription_id: int
    event_id: int
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: datetime


class ReplayRequest(BaseModel):
    ids: list[int] | None = Field(None, description="dead deliveries to replay (null: all)")


class FeedPageRead(BaseModel):
    events: list[dict[str, Any]]
    next_cursor: int = Field(description="pass as ?after= for the next page")
    has_more: bool
