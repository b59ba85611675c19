"""What an analyst does from the threshold report: apply the proposed set, restore the
previous one (both with a confirmation step, CSRF, audited, an unbacked proposal refused
with a sentence) and the interactive what-if (pick a cut-off per band, see volumes,
the precision interval, the automation share and people's work).

Applying goes through ``thresholds.apply_set`` like the API, the CLI and the demo; these
routes only add the confirmation step. The served report is cached HTML
(the same file ``quorum report thresholds`` writes), so the buttons are a panel rendered
per request (it carries the session's CSRF token) and put in after the cache note.
"""

from __future__ import annotations

import html as html_lib
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.calibration import service as calibration
from backend.calibration import thresholds
from backend.calibration.models import ThresholdSet
from backend.db import utcnow
from backend.deps import PolicyDep, SessionDep, SettingsDep
from backend.errors import NotFound, ValidationFailed
from backend.policy import Policy
from backend.web.router import PostUser, WebRoute, WebUser, _analyst, _csrf_of, render

router = APIRouter(include_in_schema=False, route_class=WebRoute)

BACK = {"report": "/reports/thresholds", "sets": "/admin/thresholds"}
VALUE_MAX_LEN = 32  # a cut-off typed into the what-if form


def previous_set(*, session: Session) -> ThresholdSet | None:
    """The set a restore goes back to: the retired set applied most recently."""
    return session.scalar(select(ThresholdSet).where(ThresholdSet.state == "retired")
                          .order_by(ThresholdSet.applied_at.desc().nulls_last(),
                                    ThresholdSet.version.desc()).limit(1))


def action_panel(*, request: Request, session: Session, policy: Policy) -> str:
    """The report's per-request panel: a notice after an action, Apply (the proposal),
    Restore (the previous set), the what-if link. Forms only for a browser session."""
    active = thresholds.active_threshold_set(session=session, policy=policy)
    base = calibration.base_set(session=session, policy=policy)
    proposed = base if base.version != active.version else None
    previous = previous_set(session=session)
    csrf = _csrf_of(request)
    esc = html_lib.escape
    parts = ['<section class="report-actions" aria-label="actions">']
    qp = request.query_params
    for key, text in (("applied", "Threshold set v{} is active: routing uses it from the "
                                  "next item (audited)."),
                      ("restored", "Threshold set v{} is restored and active (audited)."),
                      ("already", "Threshold set v{} was already active: nothing changed.")):
        value = qp.get(key, "")
        if value.isdigit() and len(value) < 12:
            parts.append(f'<p class="ok" role="status">{esc(text.format(value))}</p>')

    def form(ts: ThresholdSet, label: str) -> str:
        return (f'<form method="post" action="/admin/thresholds/{ts.version}/apply">'
                f'<input type="hidden" name="csrf" value="{esc(csrf or "")}">'
                '<input type="hidden" name="back" value="report">'
                f'<button type="submit">{esc(label)}</button></form>')

    if proposed is not None:
        bad = thresholds.unbacked_changes(proposed, active=active, policy=policy)
        if bad:
            parts.append(f'<div class="warn">{esc(thresholds.refusal_sentence(proposed, bad))}'
                         '</div>')
        elif csrf:
            parts.append(form(proposed, f"Apply v{proposed.version} (instead of "
                                        f"v{active.version})…"))
    if previous is not None and csrf:
        parts.append(form(previous, f"Restore v{previous.version}…"))
    parts.append('<p><a href="/reports/thresholds/what-if">What-if: pick a cut-off per band'
                 '</a> · <a href="/admin/thresholds">all threshold sets</a></p></section>')
    return "".join(parts)


def _confirm_rows(ts: ThresholdSet, active: ThresholdSet, policy: Policy
                  ) -> list[dict[str, Any]]:
    now = {s.key: s for s in thresholds.band_states(active, policy=policy)}
    return [{"key": st.key, "current": now.get(st.key), "new": st,
             "changed": not thresholds._same(getattr(now.get(st.key), "value", None),
                                             st.value)
             and not (st.value is None and getattr(now.get(st.key), "value", None) is None)}
            for st in thresholds.band_states(ts, policy=policy)]


@router.post("/admin/thresholds/{version}/apply", response_model=None)
def thresholds_apply(version: int, request: Request, session: SessionDep, policy: PolicyDep,
                     user: PostUser, confirm: Annotated[str, Form(max_length=10)] = "",
                     back: Annotated[str, Form(max_length=10)] = "sets"
                     ) -> HTMLResponse | RedirectResponse:
    """Apply a proposed set or restore an earlier one. The first POST shows what changes and
    asks for confirmation; the second (``confirm=yes``) applies, audited. A proposal with an
    unbacked change is refused with a sentence (409), a restore never is."""
    _analyst(user)
    if not 1 <= version <= 2**31 - 1:
        raise NotFound(f"no threshold set version {version}")
    target = BACK.get(back, BACK["sets"])
    active = thresholds.active_threshold_set(session=session, policy=policy)
    ts = thresholds.get_version(session=session, version=version)
    if ts.state == "active":
        return RedirectResponse(f"{target}?{urlencode({'already': version})}", status_code=303)
    restore = ts.state == "retired"
    bad = [] if restore else thresholds.unbacked_changes(ts, active=active, policy=policy)
    if confirm != "yes" or bad:
        return render(request, "thresholds_confirm.html", status_code=409 if bad else 200,
                      ts=ts, active=active, restore=restore, back=back if back in BACK
                      else "sets", rows=_confirm_rows(ts, active, policy),
                      refusal=thresholds.refusal_sentence(ts, bad) if bad else None)
    thresholds.apply_set(session=session, policy=policy, version=version, user=user,
                         via="web", require_backed=True, now=utcnow())
    key = "restored" if restore else "applied"
    return RedirectResponse(f"{target}?{urlencode({key: version})}", status_code=303)


def _form_cuts(request: Request, ts: ThresholdSet, policy: Policy
               ) -> tuple[dict[str, float], dict[str, str], list[str]]:
    """The what-if form's cut-offs that differ from ``ts``, what the form shows, errors."""
    kinds = thresholds.class_kinds(policy)
    shown: dict[str, str] = {}
    changed: dict[str, float] = {}
    errors: list[str] = []
    for label in sorted(kinds):
        for cut, value in (ts.bands.get(label) or {}).items():
            key = f"{label}.{cut}"
            raw = request.query_params.get(key)
            shown[key] = f"{value:g}" if raw is None else raw[:VALUE_MAX_LEN]
            if raw is None or not raw.strip():
                continue
            try:
                number = float(raw[:VALUE_MAX_LEN])
            except ValueError:
                errors.append(f"{key}: {raw[:VALUE_MAX_LEN]!r} is not a number")
                continue
            if not thresholds._same(number, value):
                changed[key] = number
    return changed, shown, errors


@router.get("/reports/thresholds/what-if")
def what_if_page(request: Request, session: SessionDep, settings: SettingsDep,
                 policy: PolicyDep, user: WebUser, version: int | None = None
                 ) -> HTMLResponse:
    """The interactive what-if: the set's cut-offs in a form; change any, see what today's
    scores would give (served by ``calibration.what_if``, the same numbers as
    ``GET /api/v1/calibration/what-if?cut=...``)."""
    _analyst(user)
    if version is not None and not 1 <= version <= 2**31 - 1:
        raise NotFound(f"no threshold set version {version}")
    ts = (thresholds.get_version(session=session, version=version) if version
          else calibration.base_set(session=session, policy=policy))
    changed, shown, errors = _form_cuts(request, ts, policy)
    result, status = None, 200
    if not errors:
        try:
            result = calibration.what_if(session=session, version=ts.version,
                                         settings=settings, policy=policy, cuts=changed)
        except ValidationFailed as exc:
            errors.append(exc.message)
    if errors:
        status = 422
    from backend.calibration.settings import get_calibration_settings

    groups = [(label, [(f"{label}.{cut}", cut) for cut in (ts.bands.get(label) or {})])
              for label in sorted(thresholds.class_kinds(policy))]
    return render(request, "what_if.html", status_code=status, ts=ts, groups=groups,
                  shown=shown, changed=changed, errors=errors, w=result,
                  cal=get_calibration_settings(),
                  sets=thresholds.list_sets(session=session))
