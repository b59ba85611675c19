"""``/replay``: the analyst's page for ``quorum replay`` (POST → redirect → GET).

The form posts (with the session's CSRF token) the time and the alternatives; the POST
checks them and redirects to ``GET /replay?since=…`` which re-runs the pipeline on the
stored items inside a rolled-back transaction and shows what would change.

Draft rules (the rules file's YAML, pasted in the form's textarea) cannot ride a redirect:
a POST that carries them is answered with the replay's page directly (200).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from backend.db import utcnow
from backend.deps import PolicyDep, SessionDep, SettingsDep
from backend.routing import replay as rp
from backend.web.router import PostUser, WebRoute, WebUser, _analyst, render

router = APIRouter(include_in_schema=False, route_class=WebRoute)

Short = Annotated[str, Query(max_length=40)]
#: Most characters of draft rules the page accepts.
MAX_DRAFT_CHARS = 200_000


def _choices(session: SessionDep, policy: PolicyDep) -> dict:
    from backend.calibration import thresholds
    from backend.calibration.models import ModelArtifact

    active = thresholds.active_threshold_set(session=session, policy=policy)
    return {"sets": thresholds.list_sets(session=session), "active": active.version,
            "models": [f"classifier-v{v}" for v in session.scalars(
                select(ModelArtifact.version).order_by(ModelArtifact.version.desc()))],
            "rule_set_version": rp.rule_set_version(session=session)}


@router.get("/replay")
def replay_page(request: Request, session: SessionDep, settings: SettingsDep,
                policy: PolicyDep, user: WebUser, since: Short = "", until: Short = "",
                thresholds: Annotated[str, Query(max_length=12)] = "",
                rules: Annotated[str, Query(max_length=12)] = "", model: Short = "",
                limit: Annotated[int, Query(ge=1, le=rp.MAX_ITEMS)] = 5000) -> HTMLResponse:
    """The form; with ``since``, the replay's table (nothing is written)."""
    _analyst(user)
    return _replay_view(request, session, settings, policy, {
        "since": since, "until": until, "thresholds": thresholds, "rules": rules,
        "model": model, "limit": limit})


def _replay_view(request: Request, session: SessionDep, settings: SettingsDep,
                 policy: PolicyDep, form: dict) -> HTMLResponse:
    """The page for ``form``: with ``since``, the replay's table (with ``draft`` rules,
    the rules file's YAML, loaded on top), else the empty form."""
    from backend.rules.service import parse_rules_text

    result = None
    if form["since"]:
        draft = form.get("draft", "")
        res = rp.replay(session=session, since=rp.parse_since(form["since"]),
                        until=rp.parse_since(form["until"], "until") if form["until"] else None,
                        settings=settings, now=utcnow(),
                        thresholds_version=rp.parse_version(form["thresholds"], "thresholds"),
                        rules_version=rp.parse_version(form["rules"], "rules"),
                        model_id=form["model"] or None, limit=form["limit"],
                        rules=parse_rules_text(draft, where="draft rules") if draft else None,
                        rules_name="draft rules")
        result = rp.report(res)
    return render(request, "replay.html", result=result, form=form,
                  **_choices(session, policy))


@router.post("/replay", response_model=None)
def replay_submit(request: Request, session: SessionDep, settings: SettingsDep,
                  policy: PolicyDep, user: PostUser, since: Annotated[str, Form(max_length=40)],
                  until: Annotated[str, Form(max_length=40)] = "",
                  thresholds: Annotated[str, Form(max_length=12)] = "",
                  rules: Annotated[str, Form(max_length=12)] = "",
                  model: Annotated[str, Form(max_length=40)] = "",
                  limit: Annotated[int, Form(ge=1, le=rp.MAX_ITEMS)] = 5000,
                  draft: Annotated[str, Form(max_length=MAX_DRAFT_CHARS)] = ""
                  ) -> Response:
    """Check the form and redirect to the page that shows the replay; with draft rules,
    replay them and show the page at once."""
    _analyst(user)
    rp.parse_since(since)
    if until:
        rp.parse_since(until, "until")
    rp.parse_version(thresholds, "thresholds")
    rp.parse_version(rules, "rules")
    if draft.strip():
        return _replay_view(request, session, settings, policy, {
            "since": since, "until": until, "thresholds": thresholds, "rules": rules,
            "model": model, "limit": limit, "draft": draft})
    query = {k: v for k, v in {"since": since, "until": until, "thresholds": thresholds,
                               "rules": rules, "model": model, "limit": limit}.items() if v}
    return RedirectResponse(f"/replay?{urlencode(query)}", status_code=303)
