from __future__ import annotations

from fastapi import APIRouter, Query

from backend.deps import AnalystUser, PolicyDep, SessionDep
from backend.rules import service
from backend.rules.schemas import BacktestResult, RuleCreate, RuleRead, RuleUpdate
from backend.users.service import audit

router = APIRouter(prefix="/api/v1/rules", tags=["rules"])


@router.get("", response_model=list[RuleRead])
def list_rules(session: SessionDep, user: AnalystUser) -> list[RuleRead]:
    return [RuleRead.model_validate(r) for r in service.list_rules(session=session)]


@router.post("", response_model=RuleRead, status_code=201)
def create_rule(data: RuleCreate, session: SessionDep, policy: PolicyDep,
                user: AnalystUser) -> RuleRead:
    rule = service.create_rule(session=session, data=data, policy=policy, user_id=user.id)
    audit(session=session, user=user, action="rules.create", target_type="rule",
          target_id=rule.name, details={"version": rule.version})
    return RuleRead.model_validate(rule)


@router.get("/{name}", response_model=RuleRead)
def get_rule(name: str, session: SessionDep, user: AnalystUser) -> RuleRead:
    return RuleRead.model_validate(service.get_rule(session=session, name_or_id=name))


@router.patch("/{name}", response_model=RuleRead)
def update_rule(name: str, data: RuleUpdate, session: SessionDep, policy: PolicyDep,
                user: AnalystUser) -> RuleRead:
    rule = service.get_rule(session=session, name_or_id=name)
    service.update_rule(session=session, rule=rule, data=data, policy=policy, user_id=user.id)
    audit(session=session, user=user, action="rules.update", target_type="rule",
          target_id=rule.name, details={"version": rule.version,
                                        "changes": data.model_dump(exclude_unset=True)})
    return RuleRead.model_validate(rule)


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
    rule = service.get_rule(session=session, name_or_id=name)
    return service.backtest(session=session, rule=rule, limit=limit)
