"""Item pages and a moderator's recent decisions (server-rendered, read-only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from backend.deps import SessionDep, SettingsDep
from backend.errors import NotFound
from backend.items.models import Item
from backend.web import history, thumbs
from backend.web import service as web
from backend.web.router import WebRoute, WebUser, render

router = APIRouter(include_in_schema=False, route_class=WebRoute)


@router.get("/items/{item_id}")
def item_page(item_id: int, request: Request, session: SessionDep,
              user: WebUser) -> HTMLResponse:
    """Everything about one item: its content, current status and full timeline (every
    decision with its provenance, every answer with its comment, rule hits, tasks)."""
    if not 1 <= item_id <= 2**63 - 1:  # beyond the database's integer range
        raise NotFound(f"no item with id {item_id}")
    from backend.media.images import image_record

    data = history.item_history(session=session, item_id=item_id)
    return render(request, "item.html", h=data, item=data.item,
                  image_fetch=image_record(session=session, item_id=item_id))


@router.get("/items/{item_id}/thumb")
def item_thumbnail(item_id: int, session: SessionDep, settings: SettingsDep, user: WebUser,
                   w: Annotated[int, Query(ge=1, le=4096)] = thumbs.DEFAULT_WIDTH
                   ) -> FileResponse:
    """A small JPEG of the item's photo (widths 96, 160, 320) for tiles and neighbour cards."""
    item = session.get(Item, item_id) if 1 <= item_id <= 2**63 - 1 else None
    if item is None:
        raise NotFound(f"no item with id {item_id}")
    path, _ = web.local_image(item=item, settings=settings)
    thumb = thumbs.cached_thumbnail(path=path, item_id=item.id, width=w,
                                    cache_dir=settings.data_dir / "thumbs")
    return FileResponse(thumb, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=86400",
                                 "X-Content-Type-Options": "nosniff"})


@router.get("/my/decisions")
def my_decisions(request: Request, session: SessionDep, user: WebUser,
                 limit: Annotated[int, Query(ge=1, le=history.RECENT_LIMIT_MAX)] = 50
                 ) -> HTMLResponse:
    """The verdicts I gave, newest first, each linked to its item page."""
    rows = history.recent_decisions(session=session, user=user, limit=limit)
    return render(request, "my_decisions.html", rows=rows, limit=limit)
