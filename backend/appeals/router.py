"""Appeals and statements of reasons over the API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from backend.appeals import service
from backend.appeals.schemas import AppealCreate, AppealRead, StatementPage
from backend.db import utcnow
from backend.decisions import statements
from backend.deps import AnalystUser, CurrentUser, PolicyDep, SessionDep, SettingsDep
from backend.users.service import audit

router = APIRouter(prefix="/api/v1", tags=["appeals"])
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post("/items/{item_id}/appeals", response_model=AppealRead, status_code=201)
def open_appeal(item_id: Id, body: AppealCreate, session: SessionDep, settings: SettingsDep,
                user: AnalystUser, response: Response) -> AppealRead:
    """Open an appeal against the item's current decision (the platform, on behalf of the
    seller). It goes to the ``APPEALS`` queue, never to the moderator who decided, and ends
    with an upheld or reversed decision. Idempotent on ``external_ref`` (200 with the same
    appeal); 409 while another appeal of the item is open or when there is no decision."""
    opened = service.open_appeal(session=session, item_id=item_id, reason=body.reason,
                                 appellant=body.appellant, external_ref=body.external_ref,
                                 now=utcnow(), settings=settings)
    if opened.created:
        audit(session=session, user=user, action="appeal.open", target_type="item",
              target_id=item_id, details={"appeal": opened.appeal.id})
    else:
        response.status_code = 200
    return AppealRead.model_validate(opened.appeal)


@router.get("/items/{item_id}/appeals", response_model=list[AppealRead])
def item_appeals(item_id: Id, session: SessionDep, user: CurrentUser) -> list[AppealRead]:
    return [AppealRead.model_validate(a)
            for a in service.list_appeals(session=session, item_id=item_id)]


@router.get("/appeals", response_model=list[AppealRead])
def appeals(session: SessionDep, user: AnalystUser,
            state: Annotated[str | None, Query(pattern="^(open|upheld|reversed)$")] = None,
            limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[AppealRead]:
    return [AppealRead.model_validate(a)
            for a in service.list_appeals(session=session, state=state, limit=limit)]


@router.get("/appeals/rates")
def appeal_rates(session: SessionDep, user: AnalystUser) -> list[dict[str, Any]]:
    """Appeal rate and reversal rate by the appealed decision's source and band."""
    frame = service.appeal_rates(session=session)
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


@router.get("/appeals/{appeal_id}", response_model=AppealRead)
def appeal(appeal_id: Id, session: SessionDep, user: CurrentUser) -> AppealRead:
    return AppealRead.model_validate(service.get_appeal(session=session, appeal_id=appeal_id))


@router.get("/decisions/{event_id}/statement")
def statement(event_id: Id, session: SessionDep, policy: PolicyDep, user: CurrentUser,
              format: Annotated[str, Query(pattern="^(quorum|dsa)$")] = "quorum"
              ) -> dict[str, Any]:
    """The statement of reasons of a decision that restricts an item (404 for one that does
    not): label and policy text, facts, automation, how to appeal; ``format=dsa`` gives
    the DSA Transparency Database's statement shape."""
    sor = statements.statement_of_reasons(session=session, event_id=event_id, policy=policy)
    return statements.dsa_statement(sor, policy=policy) if format == "dsa" else sor


@router.get("/statements", response_model=StatementPage)
def statements_export(session: SessionDep, policy: PolicyDep, user: AnalystUser,
                      since: datetime | None = None,
                      after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> StatementPage:
    """Statements of reasons in the DSA Transparency Database's shape, oldest first, paged
    by decision id (``after``), for submission to the database."""
    ids = statements.restricting_events(session=session, policy=policy, since=since,
                                        after_id=after, limit=limit + 1)
    more = len(ids) > limit
    ids = ids[:limit]
    out = [statements.dsa_statement(
        statements.statement_of_reasons(session=session, event_id=i, policy=policy),
        policy=policy) for i in ids]
    return StatementPage(statements=out, next_after=ids[-1] if more and ids else None)
