"""``POST /api/v1/imports/verdicts``: labelled history as human decisions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query, Response

from backend.db import utcnow
from backend.deps import AnalystUser, PolicyDep, SessionDep, SettingsDep
from backend.errors import (
    ErrorBody,  # noqa: E402
    ValidationFailed,
)
from backend.imports.service import ImportResult, import_verdicts
from backend.users.service import audit

router = APIRouter(prefix="/api/v1/imports", tags=["imports"])


@router.post("/verdicts", response_model=ImportResult,
             responses={207: {"description": "partial=true: the good rows were stored, the "
                                            "bad ones are listed in errors",
                              "model": ImportResult},
                        422: {"description": "bad rows, or a batch over the limit",
                              "model": ErrorBody}})
def import_verdicts_route(
    session: SessionDep, settings: SettingsDep, policy: PolicyDep, user: AnalystUser,
    response: Response,
    body: list[Any] | dict[str, Any] = Body(
        ..., description="a JSON array of labelled items, or {\"items\": [...]}; each is an "
        "item plus label, decided_by, decided_at, sampling_probability"),
    partial: bool = Query(False, description="store the valid rows even if some are bad"),
) -> ImportResult:
    """Import up to ``max_ingest_batch`` labelled items as human decisions (source
    ``import``), without queues or tasks. Re-sending the same rows changes nothing."""
    rows = body.get("items") if isinstance(body, dict) else body
    if not isinstance(rows, list):
        raise ValidationFailed("send a JSON array of labelled items or {\"items\": [...]}")
    result = import_verdicts(session=session, rows=rows, policy=policy, partial=partial,
                             max_batch=settings.max_ingest_batch, now=utcnow())
    if not result.stored:
        raise ValidationFailed(f"{len(result.errors)} error(s) in the batch; nothing was stored",
                               details=result.model_dump(mode="json"))
    audit(session=session, user=user, action="imports.verdicts",
          details={"received": result.received, "decisions": result.decisions,
                   "unchanged": result.unchanged, "kept": result.kept,
                   "rejected": result.rejected})
    response.status_code = 207 if result.errors else 200
    return result
