"""The rules pages (analysts and admins): the list, a rule's page, its life cycle.

Every form here answers with a redirect to a GET page (POST → redirect → GET): a run
(backtest, dry run) is stored and shown at ``/admin/rules/{id}?run=N``; a refused edit or
new rule is shown again with its sentence and what was typed (422), and each form's URL
also answers GET with a redirect to the rule's page, so a reload or a bookmark never meets
"Method Not Allowed". Life cycle: draft → shadow → live (``active``), and off; live only
through "Promote", which the page offers under a dry run of the current version.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from backend.deps import PolicyDep, SessionDep
from backend.errors import NotFound, QuorumError, ValidationFailed
from backend.policy import Policy
from backend.rules import runs
from backend.rules import service as rules
from backend.rules.models import Rule
from backend.rules.schemas import RuleCreate
from backend.rules.settings import get_rule_settings
from backend.users import service as users
from backend.web.router import PostUser, WebRoute, WebUser, _analyst, render

router = APIRouter(include_in_schema=False, route_class=WebRoute)

#: What the mode form may set; ``active`` (live) only through promotion.
FORM_MODES = ("draft", "shadow", "off")
FORM_ACTIONS = ("edit", "mode", "backtest", "dry-run", "promote")
MESSAGE_CHARS = 600  # a message carried in a redirect's query is cut to this


def _rule(session: Session, rule_id: int) -> Rule:
    return rules.get_rule(session=session, name_or_id=rule_id)  # 404 beyond the ids


def _to_rule(rule_id: int, **query: Any) -> RedirectResponse:
    parts = "&".join(f"{k}={quote(str(v)[:MESSAGE_CHARS])}" for k, v in query.items()
                     if v is not None)
    return RedirectResponse(f"/admin/rules/{rule_id}" + (f"?{parts}" if parts else ""),
                            status_code=303)


def _list_page(request: Request, session: Session, policy: Policy, *, status_code: int = 200,
               error: str | None = None, form: dict[str, Any] | None = None) -> HTMLResponse:
    listed = rules.list_rules(session=session)
    counts = runs.hits_by_version(session=session)
    current = {r.id: counts.get(r.id, {}).get(r.version, {}) for r in listed}
    totals = {r.id: sum(sum(v.values()) for v in counts.get(r.id, {}).values())
              for r in listed}
    return render(request, "rules.html", status_code=status_code, rules=listed,
                  current=current, totals=totals, labels=policy.keys, error=error,
                  form=form or {}, notice=request.query_params.get("notice"))


def _rule_page(request: Request, session: Session, rule: Rule, *, status_code: int = 200,
               error: str | None = None, run_id: int | None = None,
               form: dict[str, Any] | None = None) -> HTMLResponse:
    run = runs.get_run(session=session, rule=rule, run_id=run_id) if run_id else None
    promotable = promote_blocked = None
    if run is not None and run.run_id is not None and rule.mode != "active":
        try:
            runs.promotable_run(session=session, rule=rule, run_id=run.run_id)
            promotable = run
        except QuorumError as exc:
            promote_blocked = exc.message
    return render(request, "rule.html", status_code=status_code, rule=rule, run=run,
                  promotable=promotable, promote_blocked=promote_blocked,
                  versions=runs.versions(session=session, rule=rule),
                  recent=runs.recent_runs(session=session, rule=rule),
                  error=error or request.query_params.get("error"),
                  notice=request.query_params.get("notice"), form=form or {},
                  modes=FORM_MODES, dry_run_items=get_rule_settings().dry_run_items,
                  max_age=get_rule_settings().dry_run_max_age_minutes)


@router.get("/admin/rules")
def rules_page(request: Request, session: SessionDep, policy: PolicyDep,
               user: WebUser) -> HTMLResponse:
    _analyst(user)
    return _list_page(request, session, policy)


@router.post("/admin/rules")
def rule_create(request: Request, session: SessionDep, policy: PolicyDep, user: PostUser,
                name: Annotated[str, Form(max_length=100)],
                expression: Annotated[str, Form(max_length=10_000)],
                action: Annotated[str, Form(max_length=10)],
                target: Annotated[str, Form(max_length=100)] = "",
                position: Annotated[int, Form(ge=-1_000_000, le=1_000_000)] = 100,
                mode: Annotated[str, Form(max_length=10)] = "draft",
                description: Annotated[str, Form(max_length=5000)] = ""):
    """A new rule, as draft or shadow (never live: that is a promotion)."""
    _analyst(user)
    form = {"name": name, "expression": expression, "action": action, "target": target,
            "position": position, "mode": mode, "description": description}
    field = {"decide": "label", "route": "queue_kind", "tag": "tag"}.get(action, "label")
    try:
        if mode not in ("draft", "shadow"):
            raise ValidationFailed("a new rule starts as draft or shadow; it goes live by "
                                   "promotion after a dry run")
        data = RuleCreate(name=name.strip(), expression=expression.strip(), action=action,
                          position=position, mode=mode, description=description.strip() or None,
                          **{field: target.strip() or None})
        rule = rules.create_rule(session=session, data=data, policy=policy, user_id=user.id)
    except ValidationError as exc:
        session.rollback()
        return _list_page(request, session, policy, status_code=422, form=form,
                          error=rules._first_error(exc))
    except QuorumError as exc:
        session.rollback()
        return _list_page(request, session, policy, status_code=exc.status, form=form,
                          error=exc.message)
    users.audit(session=session, user=user, action="rule.create", target_type="rule",
                target_id=rule.id, details={"name": rule.name, "mode": rule.mode,
                                            "version": rule.version})
    warnings = runs.save_warnings(session=session, expression=rule.expression)
    return _to_rule(rule.id, notice=" ".join([f"Created {rule.name} v1 as {rule.mode}.",
                                              *warnings]))


@router.get("/admin/rules/{rule_id}")
def rule_page(rule_id: int, request: Request, session: SessionDep, user: WebUser,
              run: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> HTMLResponse:
    """One rule: its definition, life cycle, runs (``?run=N``), versions and their hits."""
    _analyst(user)
    return _rule_page(request, session, _rule(session, rule_id), run_id=run)


@router.get("/admin/rules/{rule_id}/{action}")
def rule_form_url(rule_id: int, action: str, user: WebUser) -> RedirectResponse:
    """A form's URL opened by GET (a reload, a bookmark): the rule's page."""
    _analyst(user)
    if action not in FORM_ACTIONS:
        raise NotFound(f"no page /admin/rules/{rule_id}/{action}")
    return RedirectResponse(f"/admin/rules/{rule_id}", status_code=303)


@router.post("/admin/rules/{rule_id}/mode")
def rule_mode(rule_id: int, session: SessionDep, policy: PolicyDep, user: PostUser,
              mode: Annotated[str, Form(max_length=10)]) -> RedirectResponse:
    """Draft, shadow or off. Live is "Promote", under a dry run."""
    _analyst(user)
    rule = _rule(session, rule_id)
    before = rule.mode
    if mode == "active":
        return _to_rule(rule.id, error="A rule goes live by promotion: run a dry run of its "
                        "current version, read it, then press Promote under it.")
    if mode not in FORM_MODES:
        return _to_rule(rule.id, error="mode must be draft, shadow or off")
    rules.update_rule(session=session, rule=rule, data={"mode": mode}, policy=policy,
                      user_id=user.id)
    users.audit(session=session, user=user, action="rule.mode", target_type="rule",
                target_id=rule.id, details={"from": before, "to": mode, "version": rule.version})
    return _to_rule(rule.id, notice=f"{rule.name} is {mode} (v{rule.version}).")


@router.post("/admin/rules/{rule_id}/edit")
def rule_edit(rule_id: int, request: Request, session: SessionDep, policy: PolicyDep,
              user: PostUser, expression: Annotated[str, Form(max_length=10_000)],
              position: Annotated[int | None, Form(ge=-1_000_000, le=1_000_000)] = None):
    """Change a rule's condition (checked like any rule: a bad one is refused with its
    position; an unknown field with the known ones) and order; a change makes a new
    version, and a live rule whose condition changes goes back to shadow."""
    _analyst(user)
    rule = _rule(session, rule_id)
    before = {"expression": rule.expression, "position": rule.position,
              "version": rule.version, "mode": rule.mode}
    changes: dict[str, object] = {"expression": expression.strip()}
    if position is not None:
        changes["position"] = position
    warnings: list[str] = []
    try:
        rules.update_rule(session=session, rule=rule, data=changes, policy=policy,
                          user_id=user.id, warnings=warnings)
    except QuorumError as exc:
        session.rollback()
        rule = _rule(session, rule_id)
        return _rule_page(request, session, rule, status_code=exc.status, error=exc.message,
                          form={"expression": expression, "position": position})
    users.audit(session=session, user=user, action="rule.edit", target_type="rule",
                target_id=rule.id, details={"from": before, "to": {
                    "expression": rule.expression, "position": rule.position,
                    "version": rule.version, "mode": rule.mode}})
    warnings += runs.save_warnings(session=session, expression=rule.expression)
    done = (f"Saved {rule.name} v{rule.version} ({rule.mode})."
            if rule.version != before["version"] else "Nothing changed.")
    return _to_rule(rule.id, notice=" ".join([done, *warnings]))


def _run(session: Session, user: Any, rule_id: int, kind: str,
         limit: int | None) -> RedirectResponse:
    _analyst(user)
    rule = _rule(session, rule_id)
    try:
        result = runs.run_rule(session=session, rule=rule, kind=kind, limit=limit,
                               user_id=user.id)
    except QuorumError as exc:
        session.rollback()
        return _to_rule(rule_id, error=exc.message)
    users.audit(session=session, user=user, action=f"rule.{kind}", target_type="rule",
                target_id=rule_id, details={"run": result.run_id, "version": result.version,
                                            "items_scanned": result.items_scanned,
                                            "hits": result.hits})
    return RedirectResponse(f"/admin/rules/{rule_id}?run={result.run_id}#run", status_code=303)


@router.post("/admin/rules/{rule_id}/backtest")
def rule_backtest(rule_id: int, session: SessionDep, user: PostUser,
                  limit: Annotated[int | None, Form(ge=1, le=1_000_000)] = 20000
                  ) -> RedirectResponse:
    """Run the condition over the stored items; show the stored run."""
    return _run(session, user, rule_id, "backtest", limit)


@router.post("/admin/rules/{rule_id}/dry-run")
def rule_dry_run(rule_id: int, session: SessionDep, user: PostUser) -> RedirectResponse:
    """Run the condition over the latest items; the page offers promotion under it."""
    return _run(session, user, rule_id, "dry_run", None)


@router.post("/admin/rules/{rule_id}/promote")
def rule_promote(rule_id: int, session: SessionDep, user: PostUser,
                 run_id: Annotated[int, Form(ge=1, le=2**31 - 1)]) -> RedirectResponse:
    """Make the rule live on the dry run the page showed (a run of its current version,
    fresh enough); audited."""
    _analyst(user)
    rule = _rule(session, rule_id)
    try:
        rule, before = runs.promote(session=session, rule=rule, run_id=run_id, user_id=user.id)
    except QuorumError as exc:
        session.rollback()
        return _to_rule(rule_id, error=exc.message)
    users.audit(session=session, user=user, action="rule.promote", target_type="rule",
                target_id=rule.id, details={"from": before, "to": "active", "run": run_id,
                                            "version": rule.version})
    return _to_rule(rule.id, notice=f"{rule.name} is live (v{rule.version}).")
