"""API shapes of crowd pools and the crowd report."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class CrowdPoolRead(BaseModel):
    id: int
    queue: str | None
    #: ``item`` (label pool: items, decisions) or ``pair`` (pair pool: pairs, judgments only).
    kind: str = "item"
    state: str
    method: str
    toloka_pool_id: str | None
    items: int
    golden_tasks: int
    decided: int
    to_moderators: int
    #: Pair pools: pairs without a majority at the maximum overlap.
    ties: int = 0
    open: int
    progress: float | None
    answers: int
    spend: float
    golden_accuracy: float | None
    rounds: int
    banned: list[str]
    created_at: datetime


class CrowdPoolDetail(CrowdPoolRead):
    config: dict[str, Any]
    workers: list[dict[str, Any]]


class CrowdReport(BaseModel):
    by: str
    groups: list[dict[str, Any]]
    overall: dict[str, Any] | None
    workers: list[dict[str, Any]]
    n_workers: int = 0
    overlap: list[dict[str, Any]]
    #: control tasks' answers, cost and share of the spend (`crowd.quality.control_cost`)
    control: dict[str, Any] = {}
    #: stated confidence vs later human verdicts, per bin (`crowd.quality.reliability`)
    reliability: list[dict[str, Any]] = []
    #: the golden set: active / retired items, sources, exposures per item and the
    #: workers who saw each (`backend.crowdwork.gold.coverage`)
    gold: dict[str, Any] = {}
