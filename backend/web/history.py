"""What happened to an item, and what a moderator decided: the item page's timeline and the
"my recent decisions" list. Keyword-only, typed, no ``Request``; domain errors only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from backend.crowdwork.models import CrowdPool, Judgment
from backend.decisions.models import DecisionEvent, ItemStatus
from backend.errors import NotFound
from backend.items.models import Item, ItemTag
from backend.queues.models import Queue, Task
from backend.rules.models import Rule, RuleHit
from backend.users.models import User

#: How many entries of each kind an item page lists (an item rarely has more; a page never
#: grows without bound).
TIMELINE_LIMIT = 500
RECENT_LIMIT_MAX = 200


@dataclass
class TimelineEntry:
    """One line of an item's history: a decision event, a human answer, a rule hit or a task."""

    at: datetime
    kind: str  # decision | answer | rule_hit | task | appeal
    title: str
    facts: dict[str, Any] = field(default_factory=dict)
    comment: str | None = None
    current: bool = False
    superseded: bool = False


@dataclass
class ItemHistory:
    item: Item
    status: ItemStatus | None
    tags: list[str]
    entries: list[TimelineEntry]


def _provenance(ev: DecisionEvent, *, user: str | None, rule: str | None,
                pool: str | None) -> dict[str, Any]:
    facts: dict[str, Any] = {"source": ev.source, "automated": not ev.is_human}
    if ev.rule_id is not None:
        facts["rule"] = f"{rule or ev.rule_id} v{ev.rule_version}"
    if ev.model_id:
        facts["model"] = ev.model_id
    if ev.threshold_set_version is not None:
        facts["threshold set"] = f"v{ev.threshold_set_version}"
    if ev.similar_item_id is not None:
        facts["reused item"] = ev.similar_item_id
    if ev.distance is not None:
        facts["distance"] = format_distance(ev.distance)
    if user:
        facts["moderator"] = user
    if ev.task_id is not None:
        facts["task"] = ev.task_id
    if pool:
        facts["crowd pool"] = pool
    if ev.aggregation_method:
        facts["aggregation"] = ev.aggregation_method
    if ev.confidence is not None:
        facts["confidence"] = f"{ev.confidence:.3f}"
    if ev.supersedes_id is not None:
        facts["supersedes event"] = ev.supersedes_id
    return facts


def format_distance(d: float) -> str:
    """A distance for people: never ``-0.00`` (float noise below zero is zero), three
    significant digits, and "identical" where the vectors are the same."""
    d = max(0.0, float(d))
    if d < 5e-4:
        return "0 (identical)"
    return f"{d:.3g}"


def item_history(*, session: Session, item_id: int) -> ItemHistory:
    """The item, its current status and every event about it, oldest first."""
    item = session.get(Item, item_id)
    if item is None:
        raise NotFound(f"no item with id {item_id}")
    status = session.get(ItemStatus, item_id)
    entries: list[TimelineEntry] = []
    mod = aliased(User)
    events = session.execute(
        select(DecisionEvent, mod.username, Rule.name, CrowdPool.toloka_pool_id)
        .outerjoin(mod, mod.id == DecisionEvent.user_id)
        .outerjoin(Rule, Rule.id == DecisionEvent.rule_id)
        .outerjoin(CrowdPool, CrowdPool.id == DecisionEvent.crowd_pool_id)
        .where(DecisionEvent.item_id == item_id)
        .order_by(DecisionEvent.id).limit(TIMELINE_LIMIT)).all()
    superseded = {ev.supersedes_id for ev, *_ in events if ev.supersedes_id is not None}
    current = status.event_id if status is not None else None
    for ev, username, rule_name, pool in events:
        entries.append(TimelineEntry(
            at=ev.created_at, kind="decision",
            title=f"Decided {ev.label} ({ev.source})",
            facts=_provenance(ev, user=username, rule=rule_name, pool=pool),
            comment=ev.comment, current=ev.id == current, superseded=ev.id in superseded))
    answers = session.execute(
        select(Judgment, User.username).outerjoin(User, User.id == Judgment.user_id)
        .where(Judgment.item_id == item_id).order_by(Judgment.id).limit(TIMELINE_LIMIT)).all()
    for j, username in answers:
        who = username if j.worker_kind == "moderator" else f"crowd worker {j.worker_id}"
        facts: dict[str, Any] = {"by": who}
        if j.time_spent_ms is not None:
            facts["time"] = f"{j.time_spent_ms / 1000:.1f} s"
        if j.is_golden:
            facts["golden answer"] = j.golden_label
        if j.assignment_status:
            facts["review"] = j.assignment_status
        entries.append(TimelineEntry(at=j.created_at, kind="answer",
                                     title=f"Answered {j.label}", facts=facts,
                                     comment=j.comment))
    hits = session.execute(
        select(RuleHit, Rule.name, Rule.action).join(Rule, Rule.id == RuleHit.rule_id)
        .where(RuleHit.item_id == item_id).order_by(RuleHit.id).limit(TIMELINE_LIMIT)).all()
    for h, name, action in hits:
        entries.append(TimelineEntry(at=h.created_at, kind="rule_hit",
                                     title=f"Rule {name} v{h.rule_version} matched",
                                     facts={"mode": h.mode, "action": action}))
    owner = aliased(User)
    tasks = session.execute(
        select(Task, Queue.name, owner.username).join(Queue, Queue.id == Task.queue_id)
        .outerjoin(owner, owner.id == Task.lease_owner_id)
        .where(Task.item_id == item_id).order_by(Task.id).limit(TIMELINE_LIMIT)).all()
    for t, queue_name, username in tasks:
        facts = {"queue": queue_name, "state": t.state, "leases": t.lease_count}
        if username and t.state == "leased":
            facts["leased by"] = username
        entries.append(TimelineEntry(at=t.created_at, kind="task",
                                     title=f"Queued in {queue_name}", facts=facts))
    entries.extend(_appeal_entries(session, item_id))
    entries.sort(key=lambda e: (e.at, ("task", "rule_hit", "answer", "decision", "appeal")
                                .index(e.kind)))
    tags = list(session.scalars(select(ItemTag.tag).where(ItemTag.item_id == item_id)
                                .order_by(ItemTag.tag)))
    return ItemHistory(item=item, status=status, tags=tags, entries=entries)


def _appeal_entries(session: Session, item_id: int) -> list[TimelineEntry]:
    """An appeal's opening (the appellant's reason) and its outcome (the reasons given)."""
    from backend.appeals.models import Appeal

    out: list[TimelineEntry] = []
    rows = session.execute(
        select(Appeal, User.username).outerjoin(User, User.id == Appeal.decided_by_id)
        .where(Appeal.item_id == item_id).order_by(Appeal.id).limit(TIMELINE_LIMIT)).all()
    for ap, username in rows:
        facts: dict[str, Any] = {"appeal": ap.id, "against event": ap.event_id,
                                 "state": ap.state}
        if ap.external_ref:
            facts["reference"] = ap.external_ref
        out.append(TimelineEntry(
            at=ap.created_at, kind="appeal", facts=facts, comment=ap.reason,
            title=f"Appeal opened{f' by {ap.appellant}' if ap.appellant else ''}"))
        if ap.state != "open" and ap.decided_at is not None:
            done: dict[str, Any] = {"appeal": ap.id}
            if username:
                done["by"] = username
            if ap.outcome_event_id is not None:
                done["decision event"] = ap.outcome_event_id
            out.append(TimelineEntry(at=ap.decided_at, kind="appeal", facts=done,
                                     title=f"Appeal {ap.state}", comment=ap.outcome_reasons))
    return out


@dataclass
class RecentDecision:
    event_id: int
    item_id: int
    title: str
    label: str
    at: datetime
    comment: str | None
    queue: str | None
    #: False once someone (or an undo) superseded it.
    current: bool


def recent_decisions(*, session: Session, user: User, limit: int = 50) -> list[RecentDecision]:
    """The verdicts ``user`` gave, newest first, with whether each still stands."""
    limit = max(1, min(int(limit), RECENT_LIMIT_MAX))
    rows = session.execute(
        select(DecisionEvent, Item.title, Queue.name, ItemStatus.event_id)
        .join(Item, Item.id == DecisionEvent.item_id)
        .outerjoin(Task, Task.id == DecisionEvent.task_id)
        .outerjoin(Queue, Queue.id == Task.queue_id)
        .outerjoin(ItemStatus, ItemStatus.item_id == DecisionEvent.item_id)
        .where(DecisionEvent.user_id == user.id, DecisionEvent.is_human.is_(True))
        .order_by(DecisionEvent.id.desc()).limit(limit)).all()
    return [RecentDecision(event_id=ev.id, item_id=ev.item_id, title=title or "", label=ev.label,
                           at=ev.created_at, comment=ev.comment, queue=queue,
                           current=current == ev.id)
            for ev, title, queue, current in rows]


def decided_by(*, session: Session, item_ids: list[int]) -> dict[int, tuple[str, datetime | None]]:
    """For each item, who made its current decision ("alice", "crowd", "classifier", …)
    and when."""
    if not item_ids:
        return {}
    rows = session.execute(
        select(ItemStatus.item_id, ItemStatus.source, ItemStatus.decided_at, User.username)
        .outerjoin(DecisionEvent, DecisionEvent.id == ItemStatus.event_id)
        .outerjoin(User, User.id == DecisionEvent.user_id)
        .where(ItemStatus.item_id.in_(item_ids))).all()
    return {item_id: (username or source or "–", at) for item_id, source, at, username in rows}
