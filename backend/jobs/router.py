"""Jobs, for admins: ``GET /api/v1/jobs`` (JSON) and the ``/admin/jobs`` page."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from backend.deps import AdminUser, SessionDep
from backend.jobs.runs import last_runs

router = APIRouter(tags=["jobs"])


class JobRunRead(BaseModel):
    name: str
    key: str
    outcome: str
    started_at: datetime
    finished_at: datetime | None
    detail: dict[str, Any] | None
    error: str | None
    worker: str
    runs: int


class JobsRead(BaseModel):
    periodic: list[JobRunRead]
    queue: list[dict[str, Any]]


def _overview(session: SessionDep) -> JobsRead:
    runs = [JobRunRead(**r.__dict__) for r in last_runs(session=session)]
    if session.get_bind().dialect.name == "postgresql":
        from backend.jobs.engine import job_counts

        queue = job_counts(session=session)
    else:
        from backend.jobs.stages import received_ids

        queue = [{"queue_name": "(in-process)", "task_name": "route",
                  "status": "received items",
                  "n": len(received_ids(session=session, limit=10**9))}]
    return JobsRead(periodic=runs, queue=queue)


@router.get("/api/v1/jobs", response_model=JobsRead)
def jobs_overview(session: SessionDep, user: AdminUser) -> JobsRead:
    """Each periodic task's last run and outcome, and the job queue's counts."""
    return _overview(session)


try:  # the admin page needs the web UI (its templates, its session login)
    from backend.web.router import WebRoute, WebUser, _admin, render
except ModuleNotFoundError:  # pragma: no cover
    pass
else:
    pages = APIRouter(include_in_schema=False, route_class=WebRoute)

    @pages.get("/admin/jobs")
    def jobs_page(request: Request, session: SessionDep, user: WebUser) -> HTMLResponse:
        """The periodic tasks' last runs and the job queue, for admins."""
        _admin(user)
        return render(request, "jobs.html", overview=_overview(session))

    router.include_router(pages)
