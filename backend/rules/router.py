from __future__ import annotations

from fastapi import APIRouter, Query

from backend.deps import AnalystUser, PolicyDep, SessionDep
from backend.rules import runs, service
from backend.rules.schemas import (
    BacktestResult,
    PromoteRequest,
    RuleCreate,
    RuleRead,
    RuleUpdate,
    VersionHits,
)
from backend.users.service import audit

router = APIRouter(prefix="/api/v1/rules", tags=["rules"])


@router.get("", response_model=list[RuleRead])
def list_rules(session: SessionDep, user: AnalystUser) -> list[RuleRead]:
    return [RuleRead.model_validate(r) for r in service.list_rules(session=session)]


@router.post("", response_model=RuleRead, status_code=201)
def create_rule(data: RuleCreate, session: SessionDep, policy: PolicyDep,
                user: AnalystUser) -> RuleRead:
    """Create a rule as ``draft`` (the default) or ``shadow``; ``active`` is refused (a rule
    goes live by ``…/promote`` after a dry run). A field an item does not have is refused
    (422 ``unknown_field``); a metadata key no recent item has is a warning."""
    rule = service.create_rule(session=session, data=data, policy=policy, user_id=user.id)
    audit(session=session, user=user, action="rules.create", target_type="rule",
          target_id=rule.name, details={"version": rule.version, "mode": rule.mode})
    out = RuleRead.model_validate(rule)
    out.warnings = runs.save_warnings(session=session, expression=rule.expression)
    return out


@router.get("/{name}", response_model=RuleRead)
def get_rule(name: str, session: SessionDep, user: AnalystUser) -> RuleRead:
    return RuleRead.model_validate(service.get_rule(session=session, name_or_id=name))


@router.patch("/{name}", response_model=RuleRead)
def update_rule(name: str, data: RuleUpdate, session: SessionDep, policy: PolicyDep,
                user: AnalystUser) -> RuleRead:
    """Change some fields (a new version). ``mode`` may be set to draft, shadow or off;
    a live rule whose condition or action changes goes back to shadow (a warning says so)."""
    rule = service.get_rule(session=session, name_or_id=name)
    before = rule.mode
    warnings: list[str] = []
    service.update_rule(session=session, rule=rule, data=data, policy=policy, user_id=user.id,
                        warnings=warnings)
    audit(session=session, user=user, action="rules.update", target_type="rule",
          target_id=rule.name, details={"version": rule.version,
                                        "changes": data.model_dump(exclude_unset=True),
                                        "mode": {"from": before, "to": rule.mode}})
    out = RuleRead.model_validate(rule)
    out.warnings = warnings + runs.save_warnings(session=session, expression=rule.expression)
    return out


@router.delete("/{name}", response_model=RuleRead)
def delete_rule(name: str, session: SessionDep, user: AnalystUser) -> RuleRead:
    """Switch a rule off. Rules are never deleted: decisions keep pointing at them."""
    rule = service.get_rule(session=session, name_or_id=name)
    service.delete_rule(session=session, rule=rule, user_id=user.id)
    audit(session=session, user=user, action="rules.off", target_type="rule",
          target_id=rule.name)
    return RuleRead.model_validate(rule)


@router.post("/{name}/backtest", response_model=BacktestResult)
def backtest_rule(name: str, session: SessionDep, user: AnalystUser,
                  limit: int | None = Query(None, ge=1, le=1_000_000)) -> BacktestResult:
    """Run the current condition over the stored items (oldest first, ``limit`` at most);
    the run is stored (``run_id``)."""
    rule = service.get_rule(session=session, name_or_id=name)
    result = service.backtest(session=session, rule=rule, limit=limit, user_id=user.id)
    audit(session=session, user=user, action="rules.backtest", target_type="rule",
          target_id=rule.name, details={"run": result.run_id, "version": result.version,
                                        "items_scanned": result.items_scanned,
                                        "hits": result.hits})
    return result


@router.post("/{name}/dry-run", response_model=BacktestResult)
def dry_run_rule(name: str, session: SessionDep, user: AnalystUser,
                 limit: int | None = Query(None, ge=1, le=1_000_000)) -> BacktestResult:
    """Run the current condition over the latest items (``QUORUM_RULE_DRY_RUN_ITEMS``, or
    fewer with ``limit``): what it would hit, by label, with sample hits and why they
    matched. Its ``run_id`` is what ``…/promote`` asks for."""
    rule = service.get_rule(session=session, name_or_id=name)
    result = runs.run_rule(session=session, rule=rule, kind="dry_run", limit=limit,
                           user_id=user.id)
    audit(session=session, user=user, action="rules.dry_run", target_type="rule",
          target_id=rule.name, details={"run": result.run_id, "version": result.version,
                                        "items_scanned": result.items_scanned,
                                        "hits": result.hits})
    return result


@router.get("/{name}/runs/{run_id}", response_model=BacktestResult)
def get_run(name: str, run_id: int, session: SessionDep, user: AnalystUser) -> BacktestResult:
    """A stored backtest or dry run of the rule."""
    rule = service.get_rule(session=session, name_or_id=name)
    return runs.get_run(session=session, rule=rule, run_id=run_id)


@router.post("/{name}/promote", response_model=RuleRead)
def promote_rule(name: str, data: PromoteRequest, session: SessionDep,
                 user: AnalystUser) -> RuleRead:
    """Make the rule live (``active``) on the evidence of a run of its current version made
    within ``QUORUM_RULE_DRY_RUN_MAX_AGE_MINUTES``: 409 when the rule changed since the run,
    the run is too old, or the rule is live already."""
    rule = service.get_rule(session=session, name_or_id=name)
    rule, before = runs.promote(session=session, rule=rule, run_id=data.run_id,
                                user_id=user.id)
    audit(session=session, user=user, action="rules.promote", target_type="rule",
          target_id=rule.name, details={"from": before, "to": "active", "run": data.run_id,
                                        "version": rule.version})
    return RuleRead.model_validate(rule)


@router.get("/{name}/versions", response_model=list[VersionHits])
def rule_versions(name: str, session: SessionDep, user: AnalystUser) -> list[VersionHits]:
    """Every version of the rule, newest first, with its mode and the hits recorded for it
    (live and shadow counted apart, never mixed across versions)."""
    rule = service.get_rule(session=session, name_or_id=name)
    return runs.versions(session=session, rule=rule)
