"""``GET /api/v1/replay``: what would change with another threshold set, rule set or model;
``POST /api/v1/replay``: the same with draft rules (the rules file's format) in the body."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from backend.db import utcnow
from backend.deps import AnalystUser, SessionDep, SettingsDep
from backend.errors import ErrorBody
from backend.routing import replay as rp
from backend.rules.service import MAX_RULES_PER_LOAD

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
    rules_file: str | None = None
    rules_loaded: dict[str, list[str]] | None = None
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


class ReplayDraft(BaseModel):
    """``POST /api/v1/replay``: draft rules (not saved) replayed on top of the rules."""

    model_config = ConfigDict(extra="forbid")

    since: str = Field(max_length=40, description="YYYY-MM-DD or ISO 8601")
    until: str | None = Field(default=None, max_length=40)
    thresholds: str | None = Field(default=None, max_length=12, description="e.g. v4")
    model: str | None = Field(default=None, max_length=40,
                              description="classifier-vN or zero-shot")
    limit: int = Field(default=rp.MAX_ITEMS, ge=1, le=rp.MAX_ITEMS)
    base_rules: str | None = Field(
        default=None, max_length=12,
        description="the rule-set version the draft rules are loaded on top of, e.g. v12 "
                    "(default: today's rules)")
    rules: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_RULES_PER_LOAD,
        description="the draft rules, each as in a rules file (`quorum rules load`): name, "
                    "expression, action, label, … (mode defaults to active); checked as a "
                    "saved rule is (the condition's size and cost limits included)")


@router.post("", response_model=ReplayRead, responses={
    404: {"model": ErrorBody, "description": "no such threshold set, base rule-set "
                                             "version or model"},
    413: {"model": ErrorBody, "description": "the body is too large"},
    422: {"model": ErrorBody, "description": "a bad time, version, model name or rule "
                                             "(the message names the rule and the problem)"}})
def replay_draft_route(session: SessionDep, settings: SettingsDep, user: AnalystUser,
                       body: ReplayDraft) -> ReplayRead:
    """Re-run the pipeline with the draft rules loaded on top of today's rules, or of
    the rule set of ``base_rules`` (as ``quorum replay [--rules vN] --rules-file`` does;
    nothing is written) and say what would change."""
    result = rp.replay(session=session, since=rp.parse_since(body.since),
                       until=rp.parse_since(body.until, "until") if body.until else None,
                       settings=settings, now=utcnow(),
                       thresholds_version=rp.parse_version(body.thresholds, "thresholds"),
                       rules_version=rp.parse_version(body.base_rules, "base_rules"),
                       model_id=body.model or None, limit=body.limit, rules=body.rules,
                       rules_name="draft rules")
    return ReplayRead(**rp.report(result))
