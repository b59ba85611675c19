from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response

from backend.db import utcnow
from backend.deps import AnalystUser, CurrentUser, PolicyDep, SessionDep, SettingsDep
from backend.errors import ErrorBody, ValidationFailed
from backend.items import service
from backend.items.schemas import DecisionRead, IngestResult, ItemDetail, ItemRead, StatusRead
from backend.limits import IdPath, Text
from backend.routing.pipeline import route_items
from backend.users.service import audit

router = APIRouter(prefix="/api/v1/items", tags=["items"])


@router.post("", response_model=IngestResult, responses={
    207: {"model": IngestResult, "description": "with partial=true: some rows refused"},
    422: {"model": ErrorBody, "description": "bad rows (details: the per-row errors); "
                                             "nothing was stored"}})
def ingest_items(
    session: SessionDep, settings: SettingsDep, policy: PolicyDep, user: AnalystUser,
    response: Response,
    body: list[Any] | dict[str, Any] = Body(
        ..., description="a JSON array of items, or {\"items\": [...]}"),
    partial: bool = Query(False, description="store the valid rows even if some are bad"),
) -> IngestResult:
    """Ingest up to ``max_ingest_batch`` items and route the new ones.

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
    route_items(session=session, item_ids=created, now=now, settings=settings)
    audit(session=session, user=user, action="items.ingest",
          details={"received": result.received, "created": result.created,
                   "updated": result.updated, "rejected": result.rejected})
    response.status_code = 207 if result.errors else 200
    return result


def _detail(session: SessionDep, item_id: int) -> ItemDetail:
    item = service.get_item(session=session, item_id=item_id)
    base = ItemRead.model_validate(item).model_dump()
    return ItemDetail(
        **base,
        status=StatusRead.model_validate(item.status) if item.status else None,
        history=[DecisionRead.model_validate(e)
                 for e in service.history(session=session, item_id=item_id)],
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
