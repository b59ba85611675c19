"""Report pages for analysts and admins: ``/reports/thresholds`` and ``/reports/class-mix``.

Served as self-contained HTML. A browser is authenticated by its web session (a missing
login redirects to ``/login``); an API client by ``Authorization: Bearer``.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from backend.deps import PolicyDep, SessionDep, SettingsDep
from backend.errors import Forbidden, ValidationFailed
from backend.reports import actions, cache
from backend.reports import service as reports
from backend.reports.thresholds import build_thresholds_report, render_page
from backend.users import service as users
from backend.users.models import User
from backend.web.router import WebRoute, web_user

router = APIRouter(include_in_schema=False, route_class=WebRoute)
router.include_router(actions.router)


def report_user(request: Request, session: SessionDep, settings: SettingsDep) -> User:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        user = users.authenticate_token(session=session, token=header[7:].strip())
    else:
        user = web_user(request, session, settings)
    if user.role not in ("analyst", "admin"):
        raise Forbidden("reports are for analysts and admins")
    return user


ReportUser = Annotated[User, Depends(report_user)]

#: The app header's look (``app.css`` is not linked: it would restyle the report's own
#: tables); the report CSP allows inline styles, no script.
HEADER_STYLE = (
    "<style>header.top{display:flex;flex-wrap:wrap;align-items:center;gap:.4rem 20px;"
    "padding:8px 20px;margin:-2rem -1rem 1.2rem;background:#16202e;color:#fff;"
    "border-radius:0 0 6px 6px}header.top a{color:#dfe7f3;text-decoration:none}"
    "header.top a:hover,header.top a:focus{text-decoration:underline}"
    "header.top :focus-visible{outline:3px solid #f6ad55;outline-offset:2px}"
    "header.top .brand{font-weight:700;font-size:18px;color:#fff}"
    "header.top nav{display:flex;flex-wrap:wrap;gap:.3rem 16px;flex:1}"
    "header.top .logout{display:flex;gap:10px;align-items:center;margin:0}"
    "header.top .who{color:#aab6c6;font-size:13px}"
    "header.top button{font:inherit;padding:.2rem .7rem;cursor:pointer}</style>")


def app_header(request: Request, user: User) -> str:
    """The web UI's header (``_header.html``, the one ``base.html`` includes) for this
    request: the logged-in user, the nav links for their role, Log out (with the session's
    CSRF token; an API client with a bearer token gets no log-out form)."""
    from backend.web.router import _csrf_of, templates

    return HEADER_STYLE + templates.get_template("_header.html").render(
        user=user, csrf=_csrf_of(request))


@router.get("/reports/thresholds", response_class=HTMLResponse)
def thresholds_report(request: Request, session: SessionDep, settings: SettingsDep,
                      policy: PolicyDep, user: ReportUser, fresh: bool = False) -> HTMLResponse:
    """The threshold report (same content as ``quorum report thresholds``), served from a
    cache keyed by the latest calibration runs, the active set and the policy version for
    ``report_cache_seconds``; ``?fresh=1`` rebuilds it."""
    key = cache.report_key(session=session, policy=policy)
    hit = None if fresh else cache.read(settings=settings, name="thresholds", key=key)
    if hit is None:
        html = build_thresholds_report(session=session, settings=settings, policy=policy).html
        # building may record the base threshold set on a fresh install: key it afterwards
        key = cache.report_key(session=session, policy=policy)
        hit = cache.write(settings=settings, name="thresholds", key=key, html=html)
    panel = actions.action_panel(request=request, session=session, policy=policy)
    return HTMLResponse(cache.with_note(hit, panel=panel, header=app_header(request, user)),
                        headers={"X-Report-Built-At": hit.built_at.isoformat()})


@router.get("/reports/class-mix", response_class=HTMLResponse)
def class_mix_report(request: Request, session: SessionDep, settings: SettingsDep,
                     policy: PolicyDep, user: ReportUser,
                     day: Annotated[str | None, Query()] = None,
                     source: Annotated[str | None, Query(max_length=100)] = None
                     ) -> HTMLResponse:
    """The daily class mix per subset and decisions by source (``quorum report daily``)."""
    try:
        when = date.fromisoformat(day) if day else None
    except ValueError as exc:
        raise ValidationFailed("day must be YYYY-MM-DD") from exc
    when = when or reports.latest_decision_day(session=session, settings=settings) \
        or date.today()
    report = reports.daily_report(session=session, day=when, settings=settings, policy=policy,
                                  source=source or None)
    page = render_page("class_mix.html", report=report)
    body = page.find("<body")
    end = page.find(">", body) + 1 if body >= 0 else 0
    return HTMLResponse(page[:end] + app_header(request, user) + page[end:])
