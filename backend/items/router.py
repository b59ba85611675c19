from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Body, Path, Query, Response

from backend.db import utcnow
from backend.deps import AnalystUser, CurrentUser, PolicyDep, SessionDep, SettingsDep
from backend.errors import ErrorBody, ValidationFailed
from backend.items import service
from backend.items.schemas import (
    AutomationReport,
    DecisionRead,
    IngestAccepted,
    ItemDetail,
    ItemImageRead,
    ItemRead,
    StatusRead,
)
from backend.jobs import dispatch
from backend.jobs.settings import get_job_settings
from backend.limits import IdPath, Text
from backend.users.service import audit

router = APIRouter(prefix="/api/v1/items", tags=["items"])


@router.post("", response_model=IngestAccepted, responses={
    207: {"model": IngestAccepted, "description": "with partial=true: some rows refused"},
    422: {"model": ErrorBody, "description": "bad rows (details: the per-row errors); "
                                             "nothing was stored"}})
def ingest_items(
    session: SessionDep, settings: SettingsDep, policy: PolicyDep, user: AnalystUser,
    response: Response, background: BackgroundTasks,
    body: list[Any] | dict[str, Any] = Body(
        ..., description="a JSON array of items, or {\"items\": [...]}"),
    partial: bool = Query(False, description="store the valid rows even if some are bad"),
    wait: bool | None = Query(None, description="route the new items before answering "
                              "(default QUORUM_JOBS_INGEST_WAIT); else answer at once with "
                              "them received and their routing queued"),
) -> IngestAccepted:
    """Ingest up to ``max_ingest_batch`` items; route the new ones (``wait``) or queue
    their routing in the same transaction, and answer with each item's state.

    A batch with a bad row is refused whole (422, per-row errors, nothing stored) unless
    ``partial=true``, which stores the valid rows and lists the bad ones.
    """
    rows = body.get("items") if isinstance(body, dict) else body
    if not isinstance(rows, list):
        raise ValidationFailed("send a JSON array of items or {\"items\": [...]}")
    if len(rows) > settings.max_ingest_batch:
        raise ValidationFailed(f"a batch holds at most {settings.max_ingest_batch} items; "
                               f"this one has {len(rows)}")
    now = utcnow()
    result, created = service.ingest(session=session, rows=rows, policy=policy,
                                     partial=partial, now=now)
    if not result.stored:
        raise ValidationFailed(f"{len(result.errors)} error(s) in the batch; nothing was stored",
                               details=result.model_dump(mode="json"))
    routed = get_job_settings().ingest_wait if wait is None else wait
    summary = dispatch.accept(session=session, item_ids=created, now=now, settings=settings,
                              wait=routed)
    background.add_task(dispatch.after_commit)
    audit(session=session, user=user, action="items.ingest",
          details={"received": result.received, "created": result.created,
                   "updated": result.updated, "rejected": result.rejected})
    response.status_code = 207 if result.errors else 200
    # the items just created and not routed here are "received": no need to read them back
    known = {} if routed else dict.fromkeys(created, "received")
    states = service.states(session=session,
                            item_ids=[i for i in result.item_ids if i not in known])
    states.update(known)
    return IngestAccepted(**result.model_dump(), routed=routed,
                          states=[states.get(i) for i in result.item_ids],
                          automation=AutomationReport.of(summary, routing=len(created)))


def _detail(session: SessionDep, item_id: int) -> ItemDetail:
    from backend.media.images import image_record

    item = service.get_item(session=session, item_id=item_id)
    base = ItemRead.model_validate(item).model_dump()
    fetch = image_record(session=session, item_id=item.id)
    return ItemDetail(
        **base,
        status=StatusRead.model_validate(item.status) if item.status else None,
        history=[DecisionRead.model_validate(e)
                 for e in service.history(session=session, item_id=item_id)],
        image_fetch=ItemImageRead.model_validate(fetch) if fetch is not None else None,
    )


@router.get("/{item_id}", response_model=ItemDetail)
def get_item(item_id: IdPath, session: SessionDep, user: CurrentUser) -> ItemDetail:
    """An item with its current status and its full decision history."""
    return _detail(session, item_id)


@router.get("/by-key/{source}/{external_id}", response_model=ItemDetail)
def get_item_by_key(source: Annotated[Text, Path(max_length=100)],
                    external_id: Annotated[Text, Path(max_length=200)], session: SessionDep,
                    user: CurrentUser) -> ItemDetail:
    item = service.get_item_by_key(session=session, source=source, external_id=external_id)
    return _detail(session, item.id)
