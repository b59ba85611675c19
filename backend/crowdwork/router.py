"""Read-only crowd API: pools, a pool, the report. Pushes and pulls run in the CLI/worker."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query

from backend.crowdwork import report
from backend.crowdwork.schemas import CrowdPoolDetail, CrowdPoolRead, CrowdReport
from backend.deps import AnalystUser, SessionDep
from backend.limits import IdPath

router = APIRouter(prefix="/api/v1/crowd", tags=["crowd"])


@router.get("/pools", response_model=list[CrowdPoolRead])
def list_pools(session: SessionDep, user: AnalystUser) -> list[CrowdPoolRead]:
    """Every crowd pool: queue, state, progress, answers, spend, golden accuracy."""
    return [CrowdPoolRead(**row) for row in report.pool_rows(session=session)]


@router.get("/pools/{pool_id}", response_model=CrowdPoolDetail)
def get_pool(pool_id: IdPath, session: SessionDep, user: AnalystUser) -> CrowdPoolDetail:
    """One pool with its configuration and per-worker metrics."""
    return CrowdPoolDetail(**report.pool_detail(session=session, pool_id=pool_id))


@router.get("/report", response_model=CrowdReport)
def crowd_report(session: SessionDep, user: AnalystUser,
                 by: Literal["pool", "day"] = Query("pool")) -> CrowdReport:
    """The crowd metrics per pool or per day, per worker, and the dynamic-overlap effect."""
    return CrowdReport(**report.crowd_report(session=session, by=by))
