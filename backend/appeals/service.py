"""Appeals: opened by the platform for a seller (or a user), worked in the ``APPEALS``
queue by a moderator other than the one who decided, ended by a decision with its own
reasons. Keyword-only, typed; domain errors only.

- ``open_appeal`` is idempotent on ``(item, external_ref)``; an item has at most one open
  appeal (a partial unique index is the backstop).
- The appeal's task is never offered to the person who made the decision appealed: a
  ``TaskSkip`` row for them (the lease query already leaves skipped tasks out).
- A verdict on an ``APPEALS`` task ends the appeal (``resolve_from_verdict``): the same label
  upholds it, another reverses it. Either way the verdict is a human decision event that
  supersedes the appealed one, so a reversed automatic decision becomes a labelled error
  for calibration like any other human label.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.appeals.models import Appeal
from backend.decisions.models import DecisionEvent, ItemStatus
from backend.errors import Conflict, NotFound, ValidationFailed
from backend.items.models import Item
from backend.queues import service as queues
from backend.queues.models import Task, TaskSkip
from backend.settings import Settings

APPEALS_KIND = "APPEALS"
APPEALS_PRIORITY = 97  # above every seed queue: a person is waiting on the answer
REASON_MAX = 5000


@dataclass
class Opened:
    appeal: Appeal
    created: bool


def open_appeal(*, session: Session, item_id: int, reason: str, appellant: str | None,
                external_ref: str | None, now: datetime, settings: Settings) -> Opened:
    """Open an appeal against the item's current decision and queue it for a moderator."""
    if not reason or not reason.strip():
        raise ValidationFailed("say why the decision is appealed (reason)")
    if len(reason) > REASON_MAX:
        raise ValidationFailed(f"the reason is limited to {REASON_MAX} characters")
    if external_ref is not None:
        prior = session.scalar(select(Appeal).where(Appeal.item_id == item_id,
                                                    Appeal.external_ref == external_ref))
        if prior is not None:
            return Opened(appeal=prior, created=False)
    if session.get(Item, item_id) is None:
        raise NotFound(f"no item with id {item_id}")
    status = session.get(ItemStatus, item_id)
    if status is None or status.event_id is None or status.label is None:
        raise Conflict(f"item {item_id} has no decision to appeal yet")
    event = session.get(DecisionEvent, status.event_id)
    if event is None or event.source == "undo":
        raise Conflict(f"item {item_id} has no decision to appeal yet")
    if session.scalar(select(Appeal.id).where(Appeal.item_id == item_id,
                                              Appeal.state == "open")) is not None:
        raise Conflict(f"item {item_id} already has an open appeal")
    appeal = Appeal(item_id=item_id, event_id=event.id, state="open", reason=reason.strip(),
                    appellant=appellant, external_ref=external_ref, created_at=now)
    session.add(appeal)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(f"item {item_id} already has an open appeal") from None
    [task_id] = queues.enqueue(session=session, kind=APPEALS_KIND, item_ids=[item_id],
                               now=now, settings=settings, priority=APPEALS_PRIORITY,
                               payloads=[{"appeal_id": appeal.id, "appealed_event": event.id}])
    appeal.task_id = task_id
    if event.user_id is not None:  # never offered to whoever made the decision
        session.add(TaskSkip(task_id=task_id, user_id=event.user_id, created_at=now))
    session.flush()
    return Opened(appeal=appeal, created=True)


def resolve_from_verdict(*, session: Session, task: Task, event_id: int | None,
                         label: str, user_id: int, comment: str | None,
                         now: datetime) -> Appeal | None:
    """End the open appeal behind an ``APPEALS`` task with this verdict (no-op otherwise)."""
    appeal_id = (task.payload or {}).get("appeal_id")
    if appeal_id is None:
        return None
    appeal = session.get(Appeal, int(appeal_id))
    if appeal is None or appeal.state != "open":
        return None
    appealed = session.get(DecisionEvent, appeal.event_id)
    state = "upheld" if appealed is not None and appealed.label == label else "reversed"
    changed = session.execute(
        update(Appeal).where(Appeal.id == appeal.id, Appeal.state == "open")
        .values(state=state, outcome_event_id=event_id, decided_by_id=user_id,
                outcome_reasons=comment, decided_at=now)
        .execution_options(synchronize_session=False)).rowcount
    if changed != 1:
        raise Conflict(f"appeal {appeal.id} was decided meanwhile")
    session.refresh(appeal)
    return appeal


def get_appeal(*, session: Session, appeal_id: int) -> Appeal:
    appeal = session.get(Appeal, appeal_id) if 1 <= appeal_id <= 2**63 - 1 else None
    if appeal is None:
        raise NotFound(f"no appeal with id {appeal_id}")
    return appeal


def list_appeals(*, session: Session, item_id: int | None = None, state: str | None = None,
                 limit: int = 100) -> list[Appeal]:
    stmt = select(Appeal).order_by(Appeal.id.desc()).limit(max(1, min(limit, 500)))
    if item_id is not None:
        stmt = stmt.where(Appeal.item_id == item_id)
    if state:
        stmt = stmt.where(Appeal.state == state)
    return list(session.scalars(stmt))


def recent_appeals(*, session: Session, limit: int = 10) -> list[dict[str, Any]]:
    """The latest decided appeals, reversals first: ``item_id``, ``state``, ``source`` of
    the appealed decision, its ``label`` (for the reports, which link each item)."""
    rows = session.execute(
        select(Appeal.item_id, Appeal.state, DecisionEvent.source, DecisionEvent.label)
        .join(DecisionEvent, DecisionEvent.id == Appeal.event_id)
        .where(Appeal.state != "open")
        .order_by((Appeal.state == "reversed").desc(), Appeal.id.desc()).limit(limit)).all()
    return [{"item_id": i, "state": st, "source": src, "label": lab}
            for i, st, src, lab in rows]


def appeal_rates(*, session: Session) -> pd.DataFrame:
    """Per source of the appealed decision (rule, similarity, classifier, moderator, crowd)
    and per band (``details.band`` of the decision, "" where it records none): decisions,
    appeals, appeal rate (appeals per decision of that source and band), decided appeals,
    reversals, reversal rate (reversals per decided appeal). Every source and band with a
    decision has a row, appealed or not."""
    band = DecisionEvent.details["band"].as_string()
    decisions = pd.DataFrame([(src, b or "", n) for src, b, n in session.execute(
        select(DecisionEvent.source, band, func.count()).where(DecisionEvent.source != "undo")
        .group_by(DecisionEvent.source, band)).all()],
        columns=["source", "band", "decisions"])
    decisions = decisions.groupby(["source", "band"], as_index=False)["decisions"].sum()
    rows = session.execute(
        select(DecisionEvent.source, DecisionEvent.details, Appeal.state)
        .join(Appeal, Appeal.event_id == DecisionEvent.id)).all()
    frame = pd.DataFrame([{"source": src, "band": (det or {}).get("band") or "",
                           "appealed": 1, "reversed": int(st == "reversed"),
                           "decided": int(st != "open")}
                          for src, det, st in rows],
                         columns=["source", "band", "appealed", "reversed", "decided"])
    by = frame.groupby(["source", "band"], as_index=False)[["appealed", "decided",
                                                            "reversed"]].sum()
    out = decisions.merge(by, on=["source", "band"], how="outer")
    for col in ("decisions", "appealed", "decided", "reversed"):
        out[col] = pd.to_numeric(out[col], errors="coerce").fillna(0).astype(int)
    out["appeal_rate"] = out["appealed"] / out["decisions"].where(out["decisions"] > 0)
    out["reversal_rate"] = out["reversed"] / out["decided"].where(out["decided"] > 0)
    out = out.sort_values(["source", "band"], ignore_index=True)
    return out[["source", "band", "decisions", "appealed", "decided", "reversed",
                "appeal_rate", "reversal_rate"]]
