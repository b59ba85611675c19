"""Item pages and a moderator's recent decisions (server-rendered, read-only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from backend.deps import SessionDep
from backend.errors import NotFound
from backend.web import history
from backend.web.router import WebRoute, WebUser, render

router = APIRouter(include_in_schema=False, route_class=WebRoute)


@router.get("/items/{item_id}")
def item_page(item_id: int, request: Request, session: SessionDep,
              user: WebUser) -> HTMLResponse:
    """Everything about one item: its content, current status and full timeline (every
    decision with its provenance, every answer with its comment, rule hits, tasks)."""
    if not 1 <= item_id <= 2**63 - 1:  # beyond the database's integer range
        raise NotFound(f"no item with id {item_id}")
    data = history.item_history(session=session, item_id=item_id)
    return render(request, "item.html", h=data, item=data.item)


@router.get("/my/decisions")
def my_decisions(request: Request, session: SessionDep, user: WebUser,
                 limit: Annotated[int, Query(ge=1, le=history.RECENT_LIMIT_MAX)] = 50
                 ) -> HTMLResponse:
    """The verdicts I gave, newest first, each linked to its item page."""
    rows = history.recent_decisions(session=session, user=user, limit=limit)
    return render(request, "my_decisions.html", rows=rows, limit=limit)
