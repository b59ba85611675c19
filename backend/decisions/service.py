"""Record decisions: append an event and derive the item's status in the same transaction.

Supersession: a human decision (moderator, crowd) supersedes whatever was current; an
automatic decision (rule, similarity, classifier) never replaces a human one — it is
still logged, with ``details.status_unchanged`` saying why it did not take effect.
Nothing is updated in place in the log and nothing is deleted.

Invariants (docs/reliability.md): an item's effective events form one chain (each
supersedes the head before it; the item's status points at the head), because the
item's status row is locked while an event is appended; a task attempt has at most one
human decision event (unique ``(task_id, task_attempt)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import Session

from backend.db import in_values, insert_returning_ids, utcnow
from backend.decisions.models import AUTOMATIC_SOURCES, HUMAN_SOURCES, DecisionEvent, ItemStatus
from backend.errors import ValidationFailed


@dataclass
class NewDecision:
    item_id: int
    label: str
    source: str
    rule_id: int | None = None
    rule_version: int | None = None
    model_id: str | None = None
    threshold_set_version: int | None = None
    similar_item_id: int | None = None
    distance: float | None = None
    user_id: int | None = None
    task_id: int | None = None
    #: The task's attempt (its lease count) a moderator's verdict answered: one human
    #: decision per ``(task_id, task_attempt)``, enforced by a unique index.
    task_attempt: int | None = None
    crowd_pool_id: int | None = None
    aggregation_method: str | None = None
    confidence: float | None = None
    comment: str | None = None
    details: dict[str, Any] | None = field(default=None)
    #: replay provenance (automatic decisions): content hash, policy, deciding inputs
    content_hash: str | None = None
    policy_version: str | None = None
    inputs: dict[str, Any] | None = None

    @property
    def is_human(self) -> bool:
        return self.source in HUMAN_SOURCES


def record_decisions(
    *, session: Session, decisions: Sequence[NewDecision], now: datetime | None = None
) -> list[int]:
    """Append the events and update each item's status; returns the event ids in order.

    Several decisions for one item in one call are applied in order (each later one
    supersedes the earlier), in waves so that the log is only ever inserted into.
    """
    if not decisions:
        return []
    now = now or utcnow()
    for d in decisions:
        if d.source not in AUTOMATIC_SOURCES + HUMAN_SOURCES:
            raise ValidationFailed(f"unknown decision source {d.source!r}")
    relaxed = session.info.pop("quorum.relaxed_commit", None)
    if relaxed is not None and relaxed is session.get_transaction():
        # a decision's commit always waits for the disk (a lease-only transaction may not;
        # see backend.queues.service.relax_commit_flush)
        session.execute(text("SET LOCAL synchronous_commit TO ON"))
    item_ids = sorted({d.item_id for d in decisions})
    current: dict[int, tuple[int | None, bool]] = {}
    for start in range(0, len(item_ids), 500):
        # The status rows are locked (PostgreSQL; SQLite's transactions hold the write lock
        # from their start) until this transaction ends, in item order: a concurrent
        # decision on the same item waits here and then reads the event this one made
        # current, so each event supersedes the previous head and the chain never forks.
        for row in session.execute(
            select(ItemStatus.item_id, ItemStatus.event_id, ItemStatus.is_human).where(
                in_values(session, ItemStatus.item_id, item_ids[start:start + 500]))
            .order_by(ItemStatus.item_id).with_for_update()
        ):
            current[row.item_id] = (row.event_id, row.is_human)
    has_status = set(current)

    waves: list[list[int]] = []
    occurrences: dict[int, int] = {}
    for pos, d in enumerate(decisions):
        n = occurrences.get(d.item_id, 0)
        occurrences[d.item_id] = n + 1
        if n == len(waves):
            waves.append([])
        waves[n].append(pos)

    ids: list[int] = [0] * len(decisions)
    status_rows: dict[int, dict[str, Any]] = {}
    for wave in waves:
        rows: list[dict[str, Any]] = []
        effective: list[bool] = []
        for pos in wave:
            d = decisions[pos]
            prev_event, prev_human = current.get(d.item_id, (None, False))
            eff = d.is_human or not prev_human
            details = dict(d.details or {})
            if not eff:
                details["status_unchanged"] = "a human decision stands"
            rows.append({
                "item_id": d.item_id, "label": d.label, "source": d.source,
                "is_human": d.is_human, "rule_id": d.rule_id, "rule_version": d.rule_version,
                "model_id": d.model_id, "threshold_set_version": d.threshold_set_version,
                "similar_item_id": d.similar_item_id, "distance": d.distance,
                "user_id": d.user_id, "task_id": d.task_id, "task_attempt": d.task_attempt,
                "crowd_pool_id": d.crowd_pool_id,
                "aggregation_method": d.aggregation_method, "confidence": d.confidence,
                "comment": d.comment, "details": details or None,
                "content_hash": d.content_hash, "policy_version": d.policy_version,
                "inputs": d.inputs,
                "supersedes_id": prev_event if eff else None, "created_at": now,
            })
            effective.append(eff)
        wave_ids = insert_returning_ids(session, DecisionEvent.__table__, rows)
        for pos, event_id, eff in zip(wave, wave_ids, effective, strict=True):
            ids[pos] = event_id
            if not eff:
                continue
            d = decisions[pos]
            current[d.item_id] = (event_id, d.is_human)
            status_rows[d.item_id] = {
                "item_id": d.item_id, "state": "decided", "label": d.label, "source": d.source,
                "is_human": d.is_human, "event_id": event_id, "decided_at": now,
                "updated_at": now,
            }
    missing = [v for k, v in status_rows.items() if k not in has_status]
    present = [v for k, v in status_rows.items() if k in has_status]
    if missing:
        session.execute(insert(ItemStatus.__table__), missing)
    if present:
        session.execute(update(ItemStatus), present)
    session.flush()
    return ids
