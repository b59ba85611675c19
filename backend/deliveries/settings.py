"""Delivery settings (``QUORUM_DELIVERIES_*``): webhook timeouts, retries, the feed."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DeliverySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUORUM_DELIVERIES_", extra="ignore")

    #: Seconds one webhook call may take.
    timeout_seconds: float = Field(5.0, gt=0)
    #: Calls of one delivery before it goes to the dead-letter list.
    max_attempts: int = Field(8, ge=1)
    #: Backoff after the n-th failed call: ``base * 2**(n-1)`` seconds (at most ``max``),
    #: times a random factor in [0.5, 1] so that failed receivers are not hit in step.
    backoff_base_seconds: float = Field(2.0, ge=0)
    backoff_max_seconds: float = Field(900.0, ge=0)
    #: Deliveries one delivery pass claims per transaction.
    batch_size: int = Field(100, ge=1, le=10_000)
    #: Seconds a claimed delivery is hidden from other senders (a sender that dies
    #: releases it after this).
    claim_seconds: float = Field(60.0, gt=0)
    #: Largest page of ``GET /api/v1/decisions``.
    feed_max_limit: int = Field(1000, ge=1)
    #: The feed's sequencer looks for late-committing events this far back (seconds): a
    #: transaction running longer than this could be missed by the feed.
    feed_horizon_seconds: float = Field(900.0, gt=0)


@lru_cache
def get_delivery_settings() -> DeliverySettings:
    return DeliverySettings()
