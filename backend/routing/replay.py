"""Replay: re-run the pipeline on stored items and say what would change.

``replay`` routes the items ingested since a time again — rules, similarity, classifier,
with the active threshold set or another version — inside a savepoint that is rolled
back: nothing is written (no event, task, score or shadow row stays). Per item it
compares the stored outcome (its first automatic decision, else the queue its first
task went to) with the replayed one, and scores both against the human verdict where
there is one. The neighbour index never offers an item its own verdict.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.decisions.models import AUTOMATIC_SOURCES, DecisionEvent, ItemStatus
from backend.items.models import Item
from backend.queues.models import Queue, Task
from backend.routing.hooks import PipelineHooks
from backend.settings import Settings

COLUMNS = ["item_id", "source", "external_id", "before", "after", "changed", "human_label",
           "before_right", "after_right"]


@dataclass
class ReplayResult:
    rows: pd.DataFrame  # COLUMNS, one row per replayed item
    thresholds_version: int
    since: datetime

    @property
    def changes(self) -> Counter[tuple[str, str]]:
        changed = self.rows[self.rows["changed"]]
        return Counter(zip(changed["before"], changed["after"], strict=True))

    def precision(self, column: str) -> tuple[int, int]:
        """(right, judged) of the automatic outcomes in ``before`` / ``after`` that have a
        human verdict to compare with."""
        auto = self.rows[self.rows[column].map(_is_automatic)
                         & self.rows["human_label"].notna()]
        return int(auto[f"{column}_right"].sum()), len(auto)


def _is_automatic(outcome: str | None) -> bool:
    return bool(outcome) and str(outcome).split(":", 1)[0] in AUTOMATIC_SOURCES


def _stored_outcomes(session: Session, ids: list[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        first_auto = select(func.min(DecisionEvent.id)).where(
            DecisionEvent.item_id.in_(chunk),
            DecisionEvent.source.in_(AUTOMATIC_SOURCES)).group_by(DecisionEvent.item_id)
        for item_id, source, label in session.execute(select(
                DecisionEvent.item_id, DecisionEvent.source, DecisionEvent.label)
                .where(DecisionEvent.id.in_(first_auto))):
            out[item_id] = f"{source}:{label}"
        first_task = select(func.min(Task.id)).where(
            Task.item_id.in_(chunk), Task.task_type == "item").group_by(Task.item_id)
        for item_id, kind in session.execute(select(Task.item_id, Queue.kind).join(
                Queue, Queue.id == Task.queue_id).where(Task.id.in_(first_task))):
            out.setdefault(item_id, f"queue:{kind}")
    return out


def replay(*, session: Session, since: datetime, settings: Settings, now: datetime,
           thresholds_version: int | None = None, until: datetime | None = None,
           hooks: PipelineHooks | None = None, limit: int | None = None) -> ReplayResult:
    """Re-run routing on the items created in ``[since, until)`` (at most ``limit``) with
    threshold set ``thresholds_version`` (default: the active one); writes nothing."""
    from backend.calibration import thresholds
    from backend.policy import get_policy
    from backend.routing.pipeline import route_items

    policy = get_policy()
    active = thresholds.active_threshold_set(session=session, policy=policy)
    version = thresholds_version or active.version
    thresholds.get_version(session=session, version=version)  # NotFound: a sentence
    stmt = select(Item.id).where(Item.created_at >= since)
    if until is not None:
        stmt = stmt.where(Item.created_at < until)
    ids = list(session.scalars(stmt.order_by(Item.id).limit(limit)))
    info = {r.id: r for r in session.execute(select(Item.id, Item.source, Item.external_id)
                                             .where(Item.id.in_(ids)))} if ids else {}
    before = _stored_outcomes(session, ids)
    human = dict(session.execute(select(ItemStatus.item_id, ItemStatus.label).where(
        ItemStatus.item_id.in_(ids), ItemStatus.is_human.is_(True))).tuples().all()) \
        if ids else {}
    session.flush()
    savepoint = session.begin_nested()
    try:
        if version != active.version:
            thresholds.apply(session=session, version=version, now=now)
        summary = route_items(session=session, item_ids=ids, now=now, settings=settings,
                              hooks=hooks, record_outcomes=True)
    finally:
        savepoint.rollback()
    session.expire_all()
    records: list[dict[str, Any]] = []
    for item_id in ids:
        b, a, h = before.get(item_id), summary.outcomes.get(item_id), human.get(item_id)
        records.append({
            "item_id": item_id, "source": info[item_id].source,
            "external_id": info[item_id].external_id, "before": b, "after": a,
            "changed": b != a, "human_label": h,
            "before_right": bool(_is_automatic(b) and h is not None and b.split(":", 1)[1] == h),
            "after_right": bool(_is_automatic(a) and h is not None and a.split(":", 1)[1] == h)})
    return ReplayResult(rows=pd.DataFrame(records, columns=COLUMNS),
                        thresholds_version=version, since=since)
