"""Calibration runs over the API: run one, read one, and the what-if of a threshold set.

Applying a proposed set stays at ``POST /api/v1/thresholds/{version}/apply``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from backend.calibration import service
from backend.db import utcnow
from backend.deps import AnalystUser, PolicyDep, SessionDep, SettingsDep
from backend.limits import DB_INT_MAX, IdPath
from backend.users.service import audit

router = APIRouter(prefix="/api/v1/calibration", tags=["calibration"])

CUTS_MAX = 50  # cut-offs per what-if (a policy has a handful of labels, two cuts each)



class RunCreate(BaseModel):
    kind: Literal["classifier", "similarity"] = "classifier"
    target_precision: float | None = Field(None, gt=0, le=1)
    routing_target_precision: float | None = Field(None, gt=0, le=1)
    reuse_target_precision: float | None = Field(None, gt=0, le=1)
    confidence: float | None = Field(None, gt=0, lt=1)
    bound_method: Literal["wilson", "clopper-pearson"] | None = None
    objective: Literal["max_automation", "f_beta", "cost"] | None = None
    beta: float | None = Field(None, gt=0)
    folds: int | None = Field(None, ge=2, le=20, description="cross-validation folds")


class RunRead(BaseModel):
    id: int
    kind: str
    status: str
    as_of: datetime
    labelled_count: int
    message: str | None
    proposed_version: int | None
    labels_needed: dict[str, int | None]
    result: dict[str, Any] | None
    report_path: str | None


def run_read(run: Any) -> RunRead:
    result = run.result or {}
    return RunRead(id=run.id, kind=run.kind, status=run.status, as_of=run.as_of,
                   labelled_count=run.labelled_count, message=run.message,
                   proposed_version=result.get("proposed_version"),
                   labels_needed=result.get("labels_needed", {}), result=result,
                   report_path=run.report_path)


@router.post("/runs", response_model=RunRead, status_code=201)
def create_run(body: RunCreate, session: SessionDep, settings: SettingsDep, policy: PolicyDep,
               user: AnalystUser) -> RunRead:
    """Run a calibration now; proposes a threshold set when something can be backed."""
    overrides = body.model_dump(exclude={"kind"}, exclude_none=True)
    run = service.run_calibration(session=session, kind=body.kind, now=utcnow(),
                                  settings=settings, policy=policy, overrides=overrides,
                                  user_id=user.id)
    audit(session=session, user=user, action="calibration.run", target_type="calibration_run",
          target_id=run.id, details={"kind": body.kind, **overrides})
    return run_read(run)


@router.get("/runs/{run_id}", response_model=RunRead)
def read_run(run_id: IdPath, session: SessionDep, user: AnalystUser) -> RunRead:
    return run_read(service.get_run(session=session, run_id=run_id))


@router.get("/what-if")
def what_if(session: SessionDep, settings: SettingsDep, policy: PolicyDep, user: AnalystUser,
            version: int | None = Query(None, ge=1, le=DB_INT_MAX,
                                        description="threshold set (default: the newest "
                                        "proposal, else the active set)"),
            cut: list[str] = Query([], max_length=CUTS_MAX, description=(
                "a cut-off of your own, `<label>.<cut>:<value>` (repeat), e.g. "
                "`fraud.high:0.8`: it decides only where the run's curve backs it"))
            ) -> dict[str, Any]:
    """Expected queue sizes, automation share, precision (with its interval) and people's
    work (moderators, crowd) of a threshold set, optionally with cut-offs of your own."""
    return service.what_if(session=session, version=version, settings=settings, policy=policy,
                           cuts=parse_cuts(cut))


def parse_cuts(items: list[str]) -> dict[str, float]:
    """``["fraud.high:0.8", ...]`` -> ``{"fraud.high": 0.8}``; a sentence on bad input."""
    from backend.errors import ValidationFailed

    if len(items) > CUTS_MAX:
        raise ValidationFailed(f"at most {CUTS_MAX} cut-offs at once")
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.replace("=", ":").partition(":")
        if not sep or "." not in key or len(item) > 200:
            raise ValidationFailed(f"cut {item[:200]!r}: write <label>.<cut>:<value>, e.g. "
                                   "fraud.high:0.8")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise ValidationFailed(f"cut {item[:200]!r}: {value[:50]!r} is not a number") from None
    return out
