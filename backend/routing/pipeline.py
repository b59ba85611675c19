"""The routing pipeline: rules → similarity → classifier → queue assignment.

Follow one item: ``POST /api/v1/items`` (items/router.py) → ``items.service.ingest`` →
``route_items`` here → ``decisions.service.record_decisions`` (automatic verdicts) or
``queues.service.enqueue`` (today's queue of the chosen kind) → a moderator leases the
task (queues/router.py) → ``queues.work.submit_verdict`` → the final decision event.

Precedence for an item:
1. golden items (known answers, for quality control) always go to ``GL`` undecided;
2. the first active ``decide`` rule decides; ``tag`` rules tag; the first active
   ``route`` rule picks the queue (and then no automatic ML decision is taken);
2b. hash banks (``hashes/matching.py``): an image within a bank's calibrated PDQ distance
   of a known-bad hash is decided (source ``hash``; shadow → the bank's queue while the
   distance is not backed) or routed to the bank's queue;
3. similarity: a close, unanimous past verdict is reused; disagreeing neighbours send
   the item to ``SIMILAR_CONFLICT``; while the reuse distance is not backed by
   calibration (shadow) neither happens: what it would have reused is recorded
   (``ShadowOutcome``) and the item goes on to the classifier; PDQ image hashes are a
   second similarity signal beside the embedding, with a reuse distance of their own;
4. the classifier's band decides (bands that are live: allowed to and backed) or routes
   (``ML_*`` queues); a band in shadow records what it would have decided and routes;
5. otherwise the signals pick the queue: ``GMV``, ``EXP_V``, ``NEW_PRODUCTS``, ``MANUAL``;
6. a share of the automatic decisions is also queued in ``SPOT_CHECK`` for people
   (``routing/spot_checks.py``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from backend.db import in_values
from backend.decisions.service import NewDecision, record_decisions
from backend.hashes.matching import image_signals
from backend.items.models import Item, ItemTag
from backend.queues import service as queues
from backend.routing.hooks import PipelineHooks, get_pipeline_hooks
from backend.routing.models import ShadowOutcome
from backend.routing.spot_checks import sample_spot_checks
from backend.rules import service as rules
from backend.rules.engine import CompiledRule, RuleOutcome, item_context
from backend.settings import Settings

ITEM_COLUMNS = ("id", "source", "external_id", "title", "description", "image", "url", "price",
                "currency", "seller_id", "category", "gmv", "exposure", "is_new", "is_golden",
                "golden_label", "safety_score", "content_hash", "metadata_")


@dataclass
class RoutingSummary:
    items: int = 0
    decided: Counter[str] = field(default_factory=Counter)  # by source
    labels: Counter[str] = field(default_factory=Counter)  # "source:label"
    queued: Counter[str] = field(default_factory=Counter)  # by queue kind
    rule_hits: Counter[str] = field(default_factory=Counter)
    shadow_hits: Counter[str] = field(default_factory=Counter)
    #: automatic decisions not taken because their threshold runs in shadow, by source
    shadow_outcomes: Counter[str] = field(default_factory=Counter)
    spot_checks: int = 0
    #: tasks moved from moderators to the crowd because their day was full (any batch's,
    #: the lowest value first: `backend.queues.overflow`)
    overflowed: int = 0
    #: per item, ``source:label`` of its automatic decision or ``queue:KIND`` (only with
    #: ``route_items(..., record_outcomes=True)``, as replay uses it)
    outcomes: dict[int, str] = field(default_factory=dict)

    def merge(self, other: RoutingSummary) -> None:
        self.items += other.items
        self.spot_checks += other.spot_checks
        self.overflowed += other.overflowed
        self.outcomes.update(other.outcomes)
        for name in ("decided", "labels", "queued", "rule_hits", "shadow_hits",
                     "shadow_outcomes"):
            getattr(self, name).update(getattr(other, name))


def signal_queue(row: dict[str, Any], settings: Settings) -> str:
    if row.get("gmv") is not None and row["gmv"] >= settings.gmv_top_threshold:
        return "GMV"
    if row.get("exposure") is not None and row["exposure"] >= settings.exposure_top_threshold:
        return "EXP_V"
    if row.get("is_new"):
        return "NEW_PRODUCTS"
    return "MANUAL"


@dataclass
class PrecomputedRules:
    """Rule outcomes evaluated before the routing transaction (`precompute_rules`), so
    that no rule runs while the writer holds a lock other requests need. Each outcome is
    kept with the ``item`` map it was evaluated on; the routing transaction uses it only
    if the rules are the same versions and the item's map is equal, else evaluates
    again (an item re-ingested or tagged in between)."""

    ruleset: rules.RuleSet
    signature: tuple[tuple[int, int, str], ...]
    outcomes: dict[int, tuple[dict[str, Any], RuleOutcome]] = field(default_factory=dict)
    used: int = 0  # how many the routing transaction could use (tests, logs)


def _rule_signature(session: Session) -> tuple[tuple[int, int, str], ...]:
    from backend.rules.models import Rule

    return tuple(session.execute(select(Rule.id, Rule.version, Rule.mode)
                                 .where(Rule.mode != "off").order_by(Rule.id)).tuples())


def precompute_rules(*, session: Session, item_ids: Sequence[int],
                     hooks: PipelineHooks | None = None) -> PrecomputedRules:
    """Evaluate the rules on ``item_ids`` through a read-only session (no write lock).

    Items whose rule inputs the ``enrich`` hook would still change (an image-safety score
    not computed yet) are left out: they are evaluated inside the routing transaction."""
    signature = _rule_signature(session)
    ruleset = rules.compiled_rule_set(session=session)
    if ruleset.switched_off:
        # compiling switched a rule off (in this session, which is rolled back): let the
        # routing transaction compile again and record the switch-off for real
        signature = ((-1, -1, "stale"),)
    pre = PrecomputedRules(ruleset=ruleset, signature=signature)
    hooks = hooks or get_pipeline_hooks()
    pending_enrich = getattr(hooks, "changes_on_enrich", None)
    ids = sorted(set(item_ids))
    for start in range(0, len(ids), 2000):
        rows, tags = _load_rows(session, ids[start:start + 2000])
        for row in rows:
            if pending_enrich is not None and pending_enrich(row):
                continue
            ctx = item_context(row, tags.get(row["id"], ()))
            pre.outcomes[row["id"]] = (ctx, ruleset.evaluate(ctx))
    return pre


def _load_rows(session: Session, ids: Sequence[int]
               ) -> tuple[list[dict[str, Any]], dict[int, list[str]]]:
    cols = [getattr(Item, c) for c in ITEM_COLUMNS]
    rows = [dict(zip(ITEM_COLUMNS, r, strict=True))
            for r in session.execute(select(*cols).where(in_values(session, Item.id, ids))
                                     .order_by(Item.id))]
    for r in rows:
        r["metadata"] = r.pop("metadata_")
    existing_tags: dict[int, list[str]] = defaultdict(list)
    for item_id, tag in session.execute(select(ItemTag.item_id, ItemTag.tag)
                                        .where(in_values(session, ItemTag.item_id, ids))):
        existing_tags[item_id].append(tag)
    return rows, existing_tags


def route_items(*, session: Session, item_ids: Sequence[int], now: datetime,
                settings: Settings, hooks: PipelineHooks | None = None,
                batch_size: int = 2000, record_outcomes: bool = False,
                precomputed: PrecomputedRules | None = None) -> RoutingSummary:
    from backend.policy import get_policy

    hooks = hooks or get_pipeline_hooks()
    if precomputed is not None and precomputed.signature == _rule_signature(session):
        ruleset = precomputed.ruleset  # same rules, same versions: its outcomes hold
    else:
        precomputed = None
        ruleset = rules.compiled_rule_set(session=session)
    policy = getattr(hooks, "policy", None) or get_policy()
    policy_version = f"{policy.name}:{policy.version}"
    summary = RoutingSummary()
    ids = list(item_ids)
    for start in range(0, len(ids), batch_size):
        summary.merge(_route_batch(session=session, ids=ids[start:start + batch_size], now=now,
                                   settings=settings, hooks=hooks, ruleset=ruleset,
                                   policy_version=policy_version,
                                   record_outcomes=record_outcomes,
                                   precomputed=precomputed))
    rules.switch_off_over_budget(session=session, ruleset=ruleset)  # rules over the budget
    return summary


def _route_batch(*, session: Session, ids: list[int], now: datetime, settings: Settings,
                 hooks: PipelineHooks, ruleset: rules.RuleSet,
                 policy_version: str | None = None,
                 record_outcomes: bool = False,
                 precomputed: PrecomputedRules | None = None) -> RoutingSummary:
    summary = RoutingSummary(items=len(ids))
    rows, existing_tags = _load_rows(session, ids)
    enrich = getattr(hooks, "enrich", None)
    if enrich is not None:
        enrich(session=session, items=rows, now=now)

    decisions: list[NewDecision] = []
    routes: dict[str, list[int]] = defaultdict(list)
    route_priority: dict[str, int | None] = {}
    hits: list[tuple[CompiledRule, int]] = []
    new_tags: list[dict[str, Any]] = []
    undecided: list[dict[str, Any]] = []
    rule_routed: dict[int, CompiledRule] = {}
    shadows: list[ShadowOutcome] = []
    hashes = {row["id"]: row.get("content_hash") for row in rows}

    for row in rows:
        ctx = item_context(row, existing_tags.get(row["id"], ()))
        pre = precomputed.outcomes.get(row["id"]) if precomputed is not None else None
        if pre is not None and pre[0] == ctx:
            outcome = pre[1]
            precomputed.used += 1  # type: ignore[union-attr]
        else:
            outcome = ruleset.evaluate(ctx)
        for rule in outcome.hits:
            hits.append((rule, row["id"]))
            (summary.shadow_hits if rule.mode == "shadow" else summary.rule_hits)[rule.name] += 1
        for rule in outcome.tags:
            if rule.tag not in existing_tags.get(row["id"], ()):
                new_tags.append({"item_id": row["id"], "tag": rule.tag,
                                 "source": f"rule:{rule.name}", "created_at": now})
                existing_tags[row["id"]].append(rule.tag or "")
        if row["is_golden"]:
            routes["GL"].append(row["id"])
            continue
        if outcome.decision is not None:
            rule = outcome.decision
            decisions.append(NewDecision(item_id=row["id"], label=rule.label or "",
                                         source="rule", rule_id=rule.id,
                                         rule_version=rule.version,
                                         inputs={"rule": rule.name}))
            continue
        if outcome.route is not None:
            rule_routed[row["id"]] = outcome.route
        undecided.append(row)

    # image hashes (PDQ): known-bad banks decide or route; near-duplicates reuse verdicts
    img = image_signals(session=session, now=now, data_dir=settings.data_dir,
                        items=[r for r in undecided if r["id"] not in rule_routed])
    if img.banks:
        kept = []
        for row in undecided:
            m = img.banks.get(row["id"])
            if m is None:
                kept.append(row)
            elif m.action == "decide" and m.live:
                decisions.append(NewDecision(item_id=row["id"], label=m.label, source="hash",
                                             distance=float(m.distance),
                                             details={"bank": m.bank}, inputs=m.inputs()))
            else:  # route, or decide in shadow: people look at it in the bank's queue
                if m.action == "decide":
                    shadows.append(ShadowOutcome(
                        item_id=row["id"], source="hash", label=m.label,
                        band=f"bank:{m.bank}"[:50], distance=float(m.distance),
                        reason=m.reason or "the bank's distance is not backed",
                        details=m.inputs(), created_at=now))
                routes[m.queue_kind].append(row["id"])
        undecided = kept
    sim = dict(hooks.similarity(session=session, items=undecided, now=now)) if undecided else {}
    for item_id, o in img.reuse.items():  # PDQ reuse beside the embedding's
        current = sim.get(item_id)
        if current is None or (not current.live and o.live):
            sim[item_id] = o
    rest = []
    for row in undecided:
        s = sim.get(row["id"])
        if row["id"] in rule_routed or s is None:
            rest.append(row)
            continue
        if not s.live:  # shadow: record what it would have reused, go on to the classifier
            if s.kind == "reuse" and s.label:
                shadows.append(ShadowOutcome(
                    item_id=row["id"], source="similarity", label=s.label, band="reuse",
                    distance=s.distance, similar_item_id=s.neighbour_id,
                    encoder_id=s.encoder_id, threshold_set_version=s.threshold_set_version,
                    reason=s.reason or "the reuse distance is not backed",
                    details=s.details or None, created_at=now))
            rest.append(row)
            continue
        if s.kind == "reuse" and s.label:
            decisions.append(NewDecision(
                item_id=row["id"], label=s.label, source="similarity",
                similar_item_id=s.neighbour_id, distance=s.distance,
                threshold_set_version=s.threshold_set_version, details=s.details or None,
                inputs={"neighbours": (s.details or {}).get("neighbours"),
                        "reuse_distance": (s.details or {}).get("reuse_distance"),
                        "encoder_id": s.encoder_id}))
        else:
            routes["SIMILAR_CONFLICT"].append(row["id"])

    clf = hooks.classifier(session=session, items=rest, now=now) if rest else {}
    for row in rest:
        rule = rule_routed.get(row["id"])
        if rule is not None:
            routes[rule.queue_kind or "MANUAL"].append(row["id"])
            if rule.priority is not None:
                route_priority[rule.queue_kind or "MANUAL"] = rule.priority
            continue
        c = clf.get(row["id"])
        if c is not None and c.shadow:
            shadows.append(ShadowOutcome(
                item_id=row["id"], source="classifier", label=c.label, band=c.shadow,
                probability=c.probability, model_id=c.model_id, encoder_id=c.encoder_id,
                threshold_set_version=c.threshold_set_version,
                reason=c.reason or "the band is not backed",
                details={"scores": c.scores, "cut": c.cut}, created_at=now))
        if c is not None and c.decides:
            decisions.append(NewDecision(
                item_id=row["id"], label=c.label, source="classifier", model_id=c.model_id,
                threshold_set_version=c.threshold_set_version, confidence=c.probability,
                details={"band": c.band},
                inputs={"scores": c.scores, "band": c.band, "cut": c.cut,
                        "encoder_id": c.encoder_id}))
        elif c is not None and c.band:
            routes[c.band].append(row["id"])
        else:
            routes[signal_queue(row, settings)].append(row["id"])

    if new_tags:
        session.execute(insert(ItemTag.__table__), new_tags)
    rules.record_hits(session=session, hits=hits, now=now)
    for d in decisions:
        d.content_hash = hashes.get(d.item_id)
        d.policy_version = policy_version
    event_ids = record_decisions(session=session, decisions=decisions, now=now)
    if shadows:
        queue_of = {item_id: kind for kind, item_ids in routes.items() for item_id in item_ids}
        for sh in shadows:
            sh.routed_to = queue_of.get(sh.item_id)
            summary.shadow_outcomes[sh.source] += 1
        session.add_all(shadows)
    summary.spot_checks += sample_spot_checks(session=session, decisions=decisions,
                                              event_ids=event_ids, now=now, settings=settings)
    for d in decisions:
        summary.decided[d.source] += 1
        summary.labels[f"{d.source}:{d.label}"] += 1
    if record_outcomes:
        for kind, item_ids in routes.items():
            summary.outcomes.update({i: f"queue:{kind}" for i in item_ids})
        summary.outcomes.update({d.item_id: f"{d.source}:{d.label}" for d in decisions})
    # the order moderators take them in: the least sure (likeliest to flip) first
    sure = {item_id: queues.top_probability(c.scores) for item_id, c in clf.items()
            if c is not None and c.scores}
    for kind, item_ids in routes.items():
        queues.enqueue(session=session, kind=kind, item_ids=item_ids, now=now,
                       settings=settings, priority=route_priority.get(kind), confidences=sure)
        summary.queued[kind] += len(item_ids)
    if settings.moderator_daily_capacity > 0 and any(
            routes.get(k) for k in settings.moderator_overflow_from):
        from backend.queues import overflow

        summary.overflowed = overflow.rebalance(session=session, settings=settings, now=now,
                                                wait=False).moved_now
    return summary
