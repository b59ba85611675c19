"""Backtests, dry runs, hits per version and promotion to live.

* A **backtest** runs a rule's current condition over the stored items (oldest first); a
  **dry run** over the latest ``QUORUM_RULE_DRY_RUN_ITEMS``. Both say how many items it
  hits, their labels, the precision against human verdicts with a confidence interval,
  the fields it read and how many items have them, and sample hits with why they matched.
  Both are stored (``rule_runs``): a page shows one after a redirect, and a promotion
  names the run it rests on.
* **Promotion** (``promote``) makes a draft, shadow or off rule live (``active``) only on a
  dry run of its current version, made within ``QUORUM_RULE_DRY_RUN_MAX_AGE_MINUTES``; a
  conditional UPDATE on ``(id, version)`` makes a concurrent edit lose cleanly.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from backend.db import utcnow
from backend.decisions.models import ItemStatus
from backend.errors import Conflict, NotFound, ValidationFailed
from backend.items.models import Item, ItemTag
from backend.rules import fields as rule_fields
from backend.rules.engine import CompiledRule, compile_condition, item_context
from backend.rules.models import Rule, RuleHit, RuleRun, RuleVersion
from backend.rules.schemas import (
    BacktestResult,
    FieldPresence,
    RunSummary,
    SampleHit,
    VersionHits,
)
from backend.rules.settings import get_rule_settings

SAMPLES = 10  # sample hits explained per run
SAMPLE_IDS = 20
METADATA_SAMPLE = 1000  # latest items whose metadata keys a save compares with
_COLUMNS = ("source", "external_id", "title", "description", "image", "url", "price",
            "currency", "seller_id", "category", "gmv", "exposure", "is_new", "is_golden",
            "safety_score")


def precision_interval(*, agree: int, labelled: int) -> tuple[float | None, float | None,
                                                              float, str]:
    """The two-sided interval on ``agree / labelled`` at the calibration's confidence and
    method (``ml.calibration.proportion_bounds``: Wilson or Clopper-Pearson, scipy)."""
    from backend.calibration.settings import get_calibration_settings
    from ml.calibration import proportion_bounds

    cal = get_calibration_settings()
    if not labelled:
        return None, None, cal.confidence, cal.bound_method
    lo, hi = proportion_bounds(successes=agree, trials=labelled, confidence=cal.confidence,
                               method=cal.bound_method, sided="two")
    lower, upper = float(lo), float(hi)
    return (None if math.isnan(lower) else lower, None if math.isnan(upper) else upper,
            cal.confidence, cal.bound_method)


def _rows(session: Session, *, newest_first: bool, limit: int | None, batch: int):
    """``(item, label, is_human, tags)`` in id order (or newest first), ``limit`` at most."""
    last_id: int | None = None
    seen = 0
    while True:
        q = (select(Item, ItemStatus.label, ItemStatus.is_human)
             .outerjoin(ItemStatus, ItemStatus.item_id == Item.id))
        if last_id is not None:
            q = q.where(Item.id < last_id if newest_first else Item.id > last_id)
        size = batch if limit is None else min(batch, limit - seen)
        q = q.order_by(Item.id.desc() if newest_first else Item.id).limit(size)
        rows = session.execute(q).all()
        if not rows:
            return
        ids = [it.id for it, _, _ in rows]
        tags: dict[int, list[str]] = {}
        for t in session.execute(select(ItemTag.item_id, ItemTag.tag)
                                 .where(ItemTag.item_id.in_(ids))):
            tags.setdefault(t.item_id, []).append(t.tag)
        for item, label, is_human in rows:
            yield item, label, is_human, tags.get(item.id, [])
        seen += len(rows)
        last_id = ids[-1]
        for it, _, _ in rows:
            session.expunge(it)  # bounded memory; the rule and the user stay attached
        if limit is not None and seen >= limit:
            return


def run_rule(*, session: Session, rule: Rule, kind: str = "backtest", limit: int | None = None,
             user_id: int | None = None, batch: int = 2000) -> BacktestResult:
    """Evaluate the rule's current condition over stored items (``backtest``: oldest first;
    ``dry_run``: the latest ``QUORUM_RULE_DRY_RUN_ITEMS`` or ``limit``) and store the run."""
    settings = get_rule_settings()
    if kind == "dry_run":
        limit = min(limit or settings.dry_run_items, settings.dry_run_items)
    program = compile_condition(rule.expression)
    refs = rule_fields.references(rule.expression)
    probe = CompiledRule(id=rule.id, name=rule.name, version=rule.version, position=0,
                         action=rule.action, mode="active", program=program)
    name, version, mode, action, label = (rule.name, rule.version, rule.mode, rule.action,
                                          rule.label)
    rule_id, expression = rule.id, rule.expression
    budget_ms = settings.item_budget_ms
    scanned = hits = 0
    human: Counter[str] = Counter()
    current: Counter[str] = Counter()
    present: Counter[str] = Counter()
    sample_ids: list[int] = []
    samples: list[SampleHit] = []
    for item, status_label, is_human, tags in _rows(session, newest_first=kind == "dry_run",
                                                    limit=limit, batch=batch):
        scanned += 1
        row: dict[str, Any] = {c: getattr(item, c) for c in _COLUMNS}
        row["metadata"] = item.metadata_
        ctx = item_context(row, tags)
        for f in refs.fields:
            if f == "metadata" and refs.metadata_keys:
                for k in refs.metadata_keys:
                    present[f"metadata.{k}"] += k in ctx["item"]["metadata"]
            else:
                present[f] += f in ctx["item"]
        started = time.perf_counter()
        hit = probe.matches(ctx)
        elapsed = (time.perf_counter() - started) * 1000
        if elapsed > budget_ms:
            raise ValidationFailed(
                f"rule {name!r} took {elapsed:.1f} ms on item {item.id}, over the "
                f"per-item budget of {budget_ms:g} ms (QUORUM_RULE_ITEM_BUDGET_MS); the "
                f"{'dry run' if kind == 'dry_run' else 'backtest'} stopped",
                details={"items_scanned": scanned})
        if not hit:
            continue
        hits += 1
        current[status_label or "undecided"] += 1
        if is_human and status_label:
            human[status_label] += 1
        if len(sample_ids) < SAMPLE_IDS:
            sample_ids.append(item.id)
        if len(samples) < SAMPLES:
            samples.append(SampleHit(
                item_id=item.id, source=item.source, external_id=item.external_id,
                title=item.title, label=status_label, is_human=bool(is_human),
                why=rule_fields.explain(expression, ctx, refs)))
    labelled = sum(human.values())
    agree = disagree = None
    precision = lower = upper = None
    confidence, method = None, None
    warnings: list[str] = []
    if action == "decide":
        agree = human.get(label or "", 0)
        disagree = labelled - agree
        precision = agree / labelled if labelled else None
        lower, upper, confidence, method = precision_interval(agree=agree, labelled=labelled)
        if labelled < settings.min_labels:
            warnings.append(
                f"too few labels: the precision rests on {labelled} hit(s) with a human "
                f"verdict (fewer than {settings.min_labels}, QUORUM_RULE_MIN_LABELS)")
    fields_read = [FieldPresence(field=f, present_on=present[f]) for f in present] or [
        FieldPresence(field=f, present_on=0) for f in refs.fields]
    absent = [p.field for p in fields_read if scanned and p.present_on == 0]
    if absent:
        warnings.append(f"no scanned item has {', '.join('item.' + f for f in absent)}: "
                        "the condition cannot be true where it reads them")
    if hits == 0:
        warnings.append(f"0 hits on {scanned} items: check the condition before relying on "
                        "it (the fields it reads and their values are listed)")
    result = BacktestResult(
        kind=kind, rule=name, version=version, mode=mode, items_scanned=scanned, hits=hits,
        hit_rate=hits / scanned if scanned else 0.0, with_human_verdict=labelled,
        agree=agree, disagree=disagree, precision=precision, human_labels=dict(human),
        current_labels=dict(current), sample_item_ids=sample_ids, labelled=labelled,
        precision_lower=lower, precision_upper=upper, confidence=confidence,
        interval_method=method, too_few_labels=action == "decide"
        and labelled < settings.min_labels, fields_read=fields_read, samples=samples,
        warnings=warnings)
    run = RuleRun(rule_id=rule_id, rule_version=version, kind=kind, items_scanned=scanned,
                  hits=hits, result=result.model_dump(mode="json"), created_by=user_id,
                  created_at=utcnow())
    session.add(run)
    session.flush()
    result.run_id, result.created_at = run.id, run.created_at
    return result


def get_run(*, session: Session, rule: Rule, run_id: int) -> BacktestResult:
    run = session.get(RuleRun, run_id) if 0 < run_id <= 2**31 - 1 else None
    if run is None or run.rule_id != rule.id:
        raise NotFound(f"rule {rule.name!r} has no run {run_id}")
    return BacktestResult.model_validate(run.result | {"run_id": run.id,
                                                       "created_at": run.created_at})


def recent_runs(*, session: Session, rule: Rule, limit: int = 10) -> list[RunSummary]:
    rows = session.scalars(select(RuleRun).where(RuleRun.rule_id == rule.id)
                           .order_by(RuleRun.id.desc()).limit(limit))
    return [RunSummary(id=r.id, kind=r.kind, version=r.rule_version,
                       items_scanned=r.items_scanned, hits=r.hits, created_at=r.created_at)
            for r in rows]


def promotable_run(*, session: Session, rule: Rule, run_id: int,
                   now: datetime | None = None) -> RuleRun:
    """The run a promotion may rest on, or a sentence saying why not."""
    now = now or utcnow()
    run = session.get(RuleRun, run_id) if 0 < run_id <= 2**31 - 1 else None
    if run is None or run.rule_id != rule.id:
        raise NotFound(f"rule {rule.name!r} has no run {run_id}")
    if rule.mode == "active":
        raise Conflict(f"rule {rule.name!r} is live already (v{rule.version})")
    if run.kind != "dry_run":
        raise Conflict(f"run {run.id} is a backtest; a promotion rests on a dry run on the "
                       "latest items: dry-run the rule")
    if run.rule_version != rule.version:
        raise Conflict(f"run {run.id} tried v{run.rule_version} of rule {rule.name!r}, which "
                       f"is at v{rule.version} now: dry-run the current version first")
    max_age = get_rule_settings().dry_run_max_age_minutes
    if run.created_at < now - timedelta(minutes=max_age):
        raise Conflict(f"run {run.id} is older than {max_age:g} minutes "
                       "(QUORUM_RULE_DRY_RUN_MAX_AGE_MINUTES): dry-run the rule again")
    return run


def promote(*, session: Session, rule: Rule, run_id: int, user_id: int | None = None,
            now: datetime | None = None) -> tuple[Rule, str]:
    """Make the rule live on the evidence of ``run_id``; returns the rule and its mode
    before. The UPDATE is conditional on the version the run tried (a concurrent edit or
    promotion makes it touch no row: a 409)."""
    from backend.rules.service import _definition

    now = now or utcnow()
    run = promotable_run(session=session, rule=rule, run_id=run_id, now=now)
    before = rule.mode
    done = session.execute(
        update(Rule).where(Rule.id == rule.id, Rule.version == run.rule_version,
                           Rule.mode != "active")
        .values(mode="active", version=Rule.version + 1, updated_at=now)
        .execution_options(synchronize_session=False))
    if done.rowcount != 1:
        raise Conflict(f"rule {rule.name!r} changed while it was being promoted: reload and "
                       "dry-run it again")
    session.refresh(rule)
    session.add(RuleVersion(rule_id=rule.id, version=rule.version,
                            definition=_definition(rule), created_by=user_id))
    session.flush()
    return rule, before


def hits_by_version(*, session: Session, rule_ids: list[int] | None = None
                    ) -> dict[int, dict[int, dict[str, int]]]:
    """``{rule_id: {version: {"active": n, "shadow": m}}}`` from the recorded hits."""
    q = select(RuleHit.rule_id, RuleHit.rule_version, RuleHit.mode, func.count()) \
        .group_by(RuleHit.rule_id, RuleHit.rule_version, RuleHit.mode)
    if rule_ids is not None:
        q = q.where(RuleHit.rule_id.in_(rule_ids))
    out: dict[int, dict[int, dict[str, int]]] = {}
    for rule_id, version, mode, n in session.execute(q):
        out.setdefault(rule_id, {}).setdefault(version, {})[mode] = n
    return out


def versions(*, session: Session, rule: Rule) -> list[VersionHits]:
    """Every version of a rule, newest first, with the hits recorded for it."""
    counts = hits_by_version(session=session, rule_ids=[rule.id]).get(rule.id, {})
    rows = []
    for v in session.scalars(select(RuleVersion).where(RuleVersion.rule_id == rule.id)
                             .order_by(RuleVersion.version.desc())):
        c = counts.get(v.version, {})
        rows.append(VersionHits(version=v.version, mode=v.definition.get("mode"),
                                expression=v.definition.get("expression"),
                                created_at=v.created_at, hits=c.get("active", 0),
                                shadow_hits=c.get("shadow", 0)))
    return rows


def metadata_keys_seen(*, session: Session, items: int = METADATA_SAMPLE) -> set[str]:
    keys: set[str] = set()
    for meta in session.scalars(select(Item.metadata_).order_by(Item.id.desc()).limit(items)):
        if isinstance(meta, dict):
            keys.update(meta)
    return keys


def save_warnings(*, session: Session, expression: str) -> list[str]:
    """What a save notices without refusing: metadata keys no recent item has."""
    refs = rule_fields.references(expression)
    if not refs.metadata_keys:
        return []
    n = min(METADATA_SAMPLE, session.scalar(select(func.count()).select_from(Item)) or 0)
    return rule_fields.metadata_warnings(refs, metadata_keys_seen(session=session), items=n)
