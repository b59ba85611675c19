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
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
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


def _confirm_page(request: Request, *, ts: ThresholdSet, active: ThresholdSet,
                  policy: Policy, back: str, bad: list[thresholds.BandState],
                  refusal_status: int, notice: str | None = None) -> HTMLResponse:
    """The Apply / Restore confirmation of ``ts``: every band now and after, live / shadow /
    off and why; an unbacked proposal refused with a sentence and no confirm button."""
    return render(request, "thresholds_confirm.html",
                  status_code=refusal_status if bad else 200, ts=ts, active=active,
                  restore=ts.state == "retired", back=back if back in BACK else "sets",
                  rows=_confirm_rows(ts, active, policy), notice=notice,
                  refusal=thresholds.refusal_sentence(ts, bad) if bad else None)


@router.get("/admin/thresholds/{version}/apply", response_model=None)
def thresholds_apply_ask(version: int, request: Request, session: SessionDep,
                         policy: PolicyDep, user: WebUser,
                         back: Annotated[str, Query(max_length=10)] = "sets",
                         new: Annotated[str, Query(max_length=10)] = ""
                         ) -> HTMLResponse | RedirectResponse:
    """The confirmation page on its own, the GET after "Use these cut-offs" on the what-if
    (POST → redirect → GET). It changes nothing; its **Yes** posts to the route below,
    which checks the backing again."""
    _analyst(user)
    if not 1 <= version <= 2**31 - 1:
        raise NotFound(f"no threshold set version {version}")
    active = thresholds.active_threshold_set(session=session, policy=policy)
    ts = thresholds.get_version(session=session, version=version)
    if ts.state == "active":
        target = BACK.get(back, BACK["sets"])
        return RedirectResponse(f"{target}?{urlencode({'already': version})}", status_code=303)
    bad = ([] if ts.state == "retired"
           else thresholds.unbacked_changes(ts, active=active, policy=policy))
    notice = None
    if new == "what-if" and ts.state == "proposed":
        notice = (f"Threshold set v{version} is proposed ({ts.note or 'edited'}; audited). "
                  "Nothing is applied until you confirm.")
    return _confirm_page(request, ts=ts, active=active, policy=policy, back=back, bad=bad,
                         refusal_status=200, notice=notice)


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
        return _confirm_page(request, ts=ts, active=active, policy=policy, back=back,
                             bad=bad, refusal_status=409)
    thresholds.apply_set(session=session, policy=policy, version=version, user=user,
                         via="web", require_backed=True, now=utcnow())
    key = "restored" if restore else "applied"
    return RedirectResponse(f"{target}?{urlencode({key: version})}", status_code=303)


def _form_cuts(fields: Mapping[str, Any], ts: ThresholdSet, policy: Policy
               ) -> tuple[dict[str, float], dict[str, str], list[str]]:
    """The what-if form's cut-offs (``fields``: the query string, or the posted form of
    "Use these cut-offs") that differ from ``ts``, what the form shows, errors."""
    kinds = thresholds.class_kinds(policy)
    shown: dict[str, str] = {}
    changed: dict[str, float] = {}
    errors: list[str] = []
    for label in sorted(kinds):
        for cut, value in (ts.bands.get(label) or {}).items():
            key = f"{label}.{cut}"
            raw = fields.get(key)
            if raw is not None and not isinstance(raw, str):
                raw = ""  # an uploaded file where a number belongs: ignored
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
    changed, shown, errors = _form_cuts(request.query_params, ts, policy)
    result, status = None, 200
    if not errors:
        try:
            result = calibration.what_if(session=session, version=ts.version,
                                         settings=settings, policy=policy, cuts=changed)
        except ValidationFailed as exc:
            errors.append(exc.message)
    if errors:
        status = 422
    return _what_if_render(request, session=session, policy=policy, ts=ts, shown=shown,
                           changed=changed, errors=errors, result=result, status=status)


def _what_if_render(request: Request, *, session: Session, policy: Policy, ts: ThresholdSet,
                    shown: dict[str, str], changed: dict[str, float], errors: list[str],
                    result: dict[str, Any] | None, status: int) -> HTMLResponse:
    from backend.calibration.settings import get_calibration_settings

    groups = [(label, [(f"{label}.{cut}", cut) for cut in (ts.bands.get(label) or {})])
              for label in sorted(thresholds.class_kinds(policy))]
    return render(request, "what_if.html", status_code=status, ts=ts, groups=groups,
                  shown=shown, changed=changed, errors=errors, w=result,
                  cal=get_calibration_settings(),
                  sets=thresholds.list_sets(session=session))


async def _posted_form(request: Request) -> Mapping[str, Any]:
    return await request.form()  # Starlette keeps it: the CSRF check read it already


@router.post("/reports/thresholds/what-if/use", response_model=None)
def what_if_use(request: Request, session: SessionDep, policy: PolicyDep, user: PostUser,
                fields: Annotated[Mapping[str, Any], Depends(_posted_form)],
                version: Annotated[int, Form(ge=1, le=2**31 - 1)]
                ) -> HTMLResponse | RedirectResponse:
    """"Use these cut-offs": a new proposed set from ``version`` with the what-if's changed
    cut-offs, made by ``editing.edit_set`` (the path of ``POST /api/v1/thresholds/{v}/edit``
    and ``quorum thresholds edit``: a changed deciding cut-off stays backed only where the
    curve behind it backs the new value, else it runs in shadow), audited
    ``thresholds.edit``; then POST → redirect → GET to the Apply confirmation, which refuses
    an unbacked proposal as ever. A bad value: the what-if again with a sentence (422)."""
    from backend.calibration.editing import edit_set
    from backend.users.service import audit

    _analyst(user)
    ts = thresholds.get_version(session=session, version=version)
    thresholds.active_threshold_set(session=session, policy=policy)
    changed, shown, errors = _form_cuts(fields, ts, policy)
    if not errors and not changed:
        errors.append(f"Nothing to use: these are threshold set v{ts.version}'s own "
                      "cut-offs. Change one and press Show first.")
    new = None
    if not errors:
        try:
            new = edit_set(session=session, policy=policy, version=ts.version, cuts=changed,
                           note=f"from the what-if on v{ts.version}", user_id=user.id)
        except ValidationFailed as exc:
            errors.append(exc.message)
    if new is None:  # edit_set refuses before it adds anything
        return _what_if_render(request, session=session, policy=policy, ts=ts, shown=shown,
                               changed=changed, errors=errors, result=None, status=422)
    audit(session=session, user=user, action="thresholds.edit", target_type="threshold_set",
          target_id=new.version, details={"from": ts.version, "cuts": changed, "via": "web"})
    return RedirectResponse(f"/admin/thresholds/{new.version}/apply?"
                            f"{urlencode({'back': 'report', 'new': 'what-if'})}",
                            status_code=303)
