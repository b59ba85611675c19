"""``GET /api/v1/replay``: what would change with another threshold set, rule set or model."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from backend.db import utcnow
from backend.deps import AnalystUser, SessionDep, SettingsDep
from backend.errors import ErrorBody
from backend.routing import replay as rp

router = APIRouter(prefix="/api/v1/replay", tags=["replay"])


class Change(BaseModel):
    before: str | None
    after: str | None
    items: int


class SourceLabel(BaseModel):
    source: str
    label: str
    before: int
    after: int
    gained: int
    lost: int
    shadow: int
    judged: int
    right: int
    precision: float | None
    precision_low: float | None
    precision_high: float | None


class Side(BaseModel):
    decided: int
    judged: int
    right: int
    precision: float | None
    precision_low: float | None
    precision_high: float | None


class ReplayRead(BaseModel):
    since: datetime
    thresholds_version: int
    rules_version: int | None
    model_id: str | None
    replayed: int
    changed: int
    in_shadow: int
    confidence: float
    changes: list[Change]
    by_source_label: list[SourceLabel]
    before: Side
    after: Side


@router.get("", response_model=ReplayRead, responses={
    404: {"model": ErrorBody, "description": "no such threshold set, rule-set version or "
                                             "model"},
    422: {"model": ErrorBody, "description": "a bad time, version or model name"}})
def replay_route(
    session: SessionDep, settings: SettingsDep, user: AnalystUser,
    since: Annotated[str, Query(max_length=40, description="YYYY-MM-DD or ISO 8601")],
    until: Annotated[str | None, Query(max_length=40)] = None,
    thresholds: Annotated[str | None, Query(max_length=12, description="e.g. v4")] = None,
    rules: Annotated[str | None, Query(max_length=12, description="rule-set version")] = None,
    model: Annotated[str | None, Query(max_length=40,
                                       description="classifier-vN or zero-shot")] = None,
    limit: Annotated[int, Query(ge=1, le=rp.MAX_ITEMS)] = rp.MAX_ITEMS,
) -> ReplayRead:
    """Re-run the pipeline on the items created since then (nothing is written) and say
    what would change, by source and label, with precision against human verdicts."""
    result = rp.replay(session=session, since=rp.parse_since(since),
                       until=rp.parse_since(until, "until") if until else None,
                       settings=settings, now=utcnow(),
                       thresholds_version=rp.parse_version(thresholds, "thresholds"),
                       rules_version=rp.parse_version(rules, "rules"),
                       model_id=model or None, limit=limit)
    return ReplayRead(**rp.report(result))
