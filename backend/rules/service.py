"""Rules: CRUD with versions, YAML loading, the compiled rule set, hit statistics, backtests."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from backend.db import utcnow
from backend.errors import Conflict, NotFound, ValidationFailed
from backend.limits import DB_INT_MAX
from backend.policy import Policy
from backend.rules.engine import (
    CompiledRule,
    ExpressionError,
    RuleSet,
    compile_condition,
)
from backend.rules.fields import check_known_fields
from backend.rules.models import EVALUATED_MODES, Rule, RuleHit, RuleVersion
from backend.rules.schemas import BacktestResult, RuleCreate, RuleUpdate
from backend.rules.settings import get_rule_settings
from backend.settings import Settings

log = logging.getLogger("quorum.rules")

DEFINITION_FIELDS = ("description", "expression", "action", "label", "queue_kind", "priority",
                     "tag", "mode", "position")

_compiled: dict[str, Any] = {}  # expression -> compiled CEL program


def _definition(rule: Rule) -> dict[str, Any]:
    return {f: getattr(rule, f) for f in DEFINITION_FIELDS}


#: Changing one of these changes what a rule matches or does: a live rule so edited goes
#: back to shadow until it is promoted again (position and description do not).
MATCHING_FIELDS = ("expression", "action", "label", "queue_kind", "priority", "tag")
LIVE_ONLY_BY_PROMOTION = (
    "a rule goes live only by promotion after a dry run of its current version "
    "(POST /api/v1/rules/{name}/dry-run, then POST /api/v1/rules/{name}/promote with its "
    "run_id; on the web: the rule's page); save it as draft or shadow")


def _check(data: RuleCreate | dict[str, Any], policy: Policy) -> None:
    expr = data.expression if isinstance(data, RuleCreate) else data["expression"]
    compile_condition(expr)
    check_known_fields(expr)
    label = data.label if isinstance(data, RuleCreate) else data.get("label")
    action = data.action if isinstance(data, RuleCreate) else data["action"]
    if action == "decide" and label not in policy.keys:
        raise ValidationFailed(f"unknown label {label!r}; the policy's labels are {policy.keys}")


def create_rule(*, session: Session, data: RuleCreate, policy: Policy,
                user_id: int | None = None, allow_live: bool = False,
                prechecked: bool = False) -> Rule:
    """A new rule, as draft or shadow (``active`` only with ``allow_live``: a rules file
    loaded by an operator, see ``load_rules_file``). ``prechecked``: ``data`` comes from
    :func:`check_rules` against the same ``policy`` (its condition is not compiled and
    costed a second time)."""
    if data.mode == "active" and not allow_live:
        raise ValidationFailed(f"rule {data.name!r} cannot start live: "
                               + LIVE_ONLY_BY_PROMOTION.format(name=data.name))
    if not prechecked:
        _check(data, policy)
    if session.scalar(select(Rule.id).where(Rule.name == data.name)) is not None:
        raise Conflict(f"a rule named {data.name!r} exists; update it instead")
    rule = Rule(**data.model_dump())
    session.add(rule)
    session.flush()
    session.add(RuleVersion(rule_id=rule.id, version=1, definition=_definition(rule),
                            created_by=user_id))
    session.flush()
    return rule


def update_rule(*, session: Session, rule: Rule, data: RuleUpdate | Mapping[str, Any],
                policy: Policy, user_id: int | None = None, allow_live: bool = False,
                warnings: list[str] | None = None, prechecked: bool = False) -> Rule:
    """Change a rule (a new version). Without ``allow_live`` a rule is never made live here
    (that is ``runs.promote``), and a live rule whose matching changes goes back to shadow
    (a sentence is appended to ``warnings``). ``prechecked``: ``data`` is a whole
    definition :func:`check_rules` checked against the same ``policy``."""
    changes = data.model_dump(exclude_unset=True) if isinstance(data, RuleUpdate) else dict(data)
    if not allow_live and changes.get("mode") == "active" and rule.mode != "active":
        raise ValidationFailed(LIVE_ONLY_BY_PROMOTION.format(name=rule.name))
    current = _definition(rule)
    if (not allow_live and rule.mode == "active" and changes.get("mode", "active") == "active"
            and any(f in changes and changes[f] != current[f] for f in MATCHING_FIELDS)):
        changes["mode"] = "shadow"
        if warnings is not None:
            warnings.append(f"rule {rule.name!r} was live; this change puts it in shadow (it "
                            "is evaluated and its hits recorded, it decides nothing) until a "
                            "dry run and a promotion make it live again")
    merged = current | changes
    try:
        checked = RuleCreate(name=rule.name, **merged)
    except ValidationError as exc:
        raise ValidationFailed(_first_error(exc)) from exc
    if not (prechecked and merged == changes):  # checked as a whole by check_rules
        _check(checked, policy)
    if merged == _definition(rule):
        return rule  # nothing changed: same version
    for key, value in checked.model_dump(exclude={"name"}).items():
        setattr(rule, key, value)
    rule.version += 1
    rule.updated_at = utcnow()
    session.add(RuleVersion(rule_id=rule.id, version=rule.version, definition=_definition(rule),
                            created_by=user_id))
    session.flush()
    return rule


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def get_rule(*, session: Session, name_or_id: str | int) -> Rule:
    """A rule by id (all digits: names never are) or by name."""
    if isinstance(name_or_id, int) or (str(name_or_id).isascii() and str(name_or_id).isdigit()):
        rule_id = int(name_or_id)
        rule = session.get(Rule, rule_id) if 0 < rule_id <= DB_INT_MAX else None
    else:
        rule = session.scalar(select(Rule).where(Rule.name == name_or_id))
    if rule is None:
        raise NotFound(f"no rule {name_or_id!r}")
    return rule


def list_rules(*, session: Session) -> list[Rule]:
    return list(session.scalars(select(Rule).order_by(Rule.position, Rule.name)))


def delete_rule(*, session: Session, rule: Rule, user_id: int | None = None) -> Rule:
    """Rules are never deleted (decisions point at them); "delete" switches a rule off."""
    return update_rule(session=session, rule=rule, data={"mode": "off"},
                       policy=_policy_any(), user_id=user_id)


def _policy_any() -> Policy:
    from backend.policy import get_policy

    return get_policy()


#: Most rules one rules file or draft (``POST /api/v1/replay``, the replay page) may hold.
MAX_RULES_PER_LOAD = 500


def check_rules(data: Any, *, policy: Policy, where: str) -> list[RuleCreate]:
    """The rules of a rules file's content (a list, or ``{rules: [...]}``), each checked as
    ``create_rule`` checks it (schema, CEL compile-time cost limits, known fields, labels).

    One bad rule refuses them all: ``ValidationFailed`` whose message names ``where``, how
    many were refused and the first rule and its problem; ``details``: every problem."""
    entries = data.get("rules") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ValidationFailed(f"{where}: expected a list of rules (or a 'rules:' key)")
    if len(entries) > MAX_RULES_PER_LOAD:
        raise ValidationFailed(f"{where}: {len(entries)} rules; at most {MAX_RULES_PER_LOAD} "
                               "are loaded at once")
    parsed: list[RuleCreate] = []
    problems: list[str] = []
    first_at: dict[str, int] = {}
    for n, entry in enumerate(entries, start=1):
        name = entry.get("name", f"#{n}") if isinstance(entry, dict) else f"#{n}"
        if isinstance(name, str) and name in first_at:
            problems.append(f"rule {name} (entry {n}): the name is used by entry "
                            f"{first_at[name]} too; rule names must be unique")
            continue
        if isinstance(name, str):
            first_at[name] = n
        if isinstance(entry, dict):
            entry = {"mode": "active", **entry}  # a rules file's default: live (see docs)
        try:
            rc = RuleCreate.model_validate(entry)
            _check(rc, policy)
            parsed.append(rc)
        except ValidationError as exc:
            problems.append(f"rule {name}: {_first_error(exc)}")
        except ValidationFailed as exc:
            problems.append(f"rule {name}: {exc.message}")
    if problems:
        raise ValidationFailed(f"{where}: {len(problems)} rule(s) refused, nothing loaded "
                               f"({problems[0]})", details=problems)
    return parsed


def load_rules(*, session: Session, data: Any, policy: Policy, where: str,
               user_id: int | None = None) -> dict[str, list[str]]:
    """Create or update the rules of a rules file's content (see :func:`check_rules`: all
    are checked first, one bad rule refuses them all and nothing changes)."""
    return save_rules(session=session, parsed=check_rules(data, policy=policy, where=where),
                      policy=policy, user_id=user_id)


def save_rules(*, session: Session, parsed: Sequence[RuleCreate], policy: Policy,
               user_id: int | None = None) -> dict[str, list[str]]:
    """Create or update rules already checked by :func:`check_rules`, by name; says which
    were created, updated and unchanged."""
    report: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": []}
    for rc in parsed:
        existing = session.scalar(select(Rule).where(Rule.name == rc.name))
        if existing is None:
            create_rule(session=session, data=rc, policy=policy, user_id=user_id,
                        allow_live=True, prechecked=True)
            report["created"].append(rc.name)
        else:
            before = existing.version
            update_rule(session=session, rule=existing, data=rc.model_dump(exclude={"name"}),
                        policy=policy, user_id=user_id, allow_live=True, prechecked=True)
            report["updated" if existing.version != before else "unchanged"].append(rc.name)
    return report


def parse_rules_text(text: str, *, where: str) -> Any:
    """A rules file's text (YAML; JSON is YAML too) → its content, for :func:`load_rules`."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"{where} is not valid YAML: {exc}") from exc


def load_rules_file(*, session: Session, path: Path, policy: Policy,
                    user_id: int | None = None) -> dict[str, list[str]]:
    """Create or update the rules in a YAML file (a list, or ``{rules: [...]}``).

    All rules are checked first: one bad rule refuses the whole file (nothing changes).
    """
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ValidationFailed(f"{path} does not exist") from exc
    return load_rules(session=session, data=parse_rules_text(text, where=str(path)),
                      policy=policy, where=str(path), user_id=user_id)


def compiled_rule_set(*, session: Session) -> RuleSet:
    """The rules that are on, compiled, with the per-item time budget.

    A stored rule that no longer passes the checks (saved before a limit existed, or
    under a looser one) is switched off here, with an audit entry, rather than run."""
    compiled: list[CompiledRule] = []
    switched_off = 0
    for r in session.scalars(select(Rule).where(Rule.mode.in_(EVALUATED_MODES))):
        key = r.expression
        program = _compiled.get(key)
        if program is None:
            try:
                program = _compiled[key] = compile_condition(r.expression)
            except ExpressionError as exc:
                switch_off(session=session, rule=r, reason=f"rule {r.name!r} was switched "
                           f"off: {exc.message}")
                switched_off += 1
                continue
        compiled.append(CompiledRule(
            id=r.id, name=r.name, version=r.version, position=r.position, action=r.action,
            mode=r.mode, program=program, label=r.label, queue_kind=r.queue_kind,
            priority=r.priority, tag=r.tag))
    return RuleSet.build(compiled, budget_ms=get_rule_settings().item_budget_ms,
                         switched_off=switched_off)


def switch_off(*, session: Session, rule: Rule, reason: str,
               details: dict[str, Any] | None = None) -> None:
    """Turn a rule off (a new version) and say why in the audit log and the server log."""
    from backend.users.service import audit

    log.warning("%s", reason)
    # not through update_rule: its checks would refuse the very condition being switched off
    rule.mode = "off"
    rule.version += 1
    rule.updated_at = utcnow()
    session.add(RuleVersion(rule_id=rule.id, version=rule.version, definition=_definition(rule)))
    session.flush()
    audit(session=session, user=None, action="rules.switched_off", target_type="rule",
          target_id=rule.name, details={"message": reason, "version": rule.version,
                                        **(details or {})})


def switch_off_over_budget(*, session: Session, ruleset: RuleSet) -> list[str]:
    """Persist what ``RuleSet.evaluate`` found: each rule over the per-item budget is
    switched off (once). Returns the messages."""
    messages = []
    for rule_id, over in list(ruleset.over_budget.items()):
        rule = session.get(Rule, rule_id)
        if rule is None or rule.mode == "off":
            continue
        switch_off(session=session, rule=rule, reason=over.message,
                   details={"elapsed_ms": round(over.elapsed_ms, 3),
                            "budget_ms": over.budget_ms, "item": over.item})
        messages.append(over.message)
    return messages


def record_hits(*, session: Session, hits: Sequence[tuple[CompiledRule, int]],
                now: datetime) -> None:
    """Store rule hits ``(rule, item_id)`` and bump the per-rule counters."""
    if not hits:
        return
    session.execute(insert(RuleHit.__table__), [
        {"rule_id": r.id, "rule_version": r.version, "item_id": item_id, "mode": r.mode,
         "created_at": now} for r, item_id in hits])
    counts = Counter((r.id, r.mode) for r, _ in hits)
    for (rule_id, mode), n in counts.items():
        col = Rule.shadow_hits if mode == "shadow" else Rule.hits
        session.execute(update(Rule).where(Rule.id == rule_id)
                        .values({col: col + n, Rule.last_hit_at: now}))


def backtest(*, session: Session, rule: Rule, limit: int | None = None,
             user_id: int | None = None) -> BacktestResult:
    """Run a rule's condition over stored items; compare hits with their human verdicts
    (``runs.run_rule``: precision with an interval, sample hits with why they matched)."""
    from backend.rules.runs import run_rule

    return run_rule(session=session, rule=rule, kind="backtest", limit=limit, user_id=user_id)


def hit_counts(*, session: Session) -> dict[int, int]:
    return dict(session.execute(select(RuleHit.rule_id, func.count()).group_by(RuleHit.rule_id))
                .tuples().all())


def known_queue_kinds(*, session: Session, settings: Settings) -> set[str]:
    """The queue kinds Quorum knows: configured priorities, crowd and chunked kinds, the
    pair-task kind, the kinds rules route to, and the kinds that already have queues."""
    from backend.calibration.settings import get_calibration_settings
    from backend.queues.models import Queue

    kinds = set(settings.queue_priorities) | set(settings.crowd_queue_kinds)
    kinds |= set(settings.queue_chunked_kinds) | {get_calibration_settings().pair_queue_kind}
    kinds |= {k for k in session.scalars(select(Rule.queue_kind).where(
        Rule.action == "route", Rule.queue_kind.is_not(None))) if k}
    kinds |= set(session.scalars(select(Queue.kind).distinct()))
    return kinds


def check_queue_kinds(*, session: Session, settings: Settings, kinds: Sequence[str]) -> None:
    """Refuse a grant of a queue kind nobody routes to (a typo would grant nothing)."""
    wanted = [k for k in kinds if k != "*"]
    if not wanted:
        return
    known = known_queue_kinds(session=session, settings=settings)
    unknown = [k for k in wanted if k not in known]
    if unknown:
        raise ValidationFailed(
            f"unknown queue kind {unknown[0]!r}; known kinds are {', '.join(sorted(known))} "
            "(or * for every kind)", details={"unknown": unknown})
