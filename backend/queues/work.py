"""A moderator's verdict on a task: judgment, decision event and task done in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.crowdwork.models import Judgment
from backend.decisions.models import DecisionEvent
from backend.decisions.service import NewDecision, record_decisions
from backend.errors import LeaseLost, ValidationFailed
from backend.items.models import Item
from backend.policy import Policy
from backend.queues import service as queues
from backend.queues.models import Task
from backend.users.models import User

#: Answers to a pair task: do the two items deserve the same decision?
PAIR_ANSWERS = ("same", "different")


@dataclass
class VerdictResult:
    task: Task
    judgment_id: int
    event_id: int | None
    replayed: bool = False


def submit_verdict(*, session: Session, task_id: int, user: User, label: str,
                   policy: Policy, now: datetime, comment: str | None = None,
                   time_spent_ms: int | None = None) -> VerdictResult:
    """Record ``user``'s verdict on the task they hold.

    Atomic: the task goes to ``done`` through `queues.finish_leased` (one conditional
    ``UPDATE`` whose row count decides) before anything is written, so of two verdicts
    on one task only one can win, and a verdict on a lease that expired and was taken by
    someone else is refused (`LeaseLost`, 409). So is a verdict on a task nobody leased
    and one on a crowd queue's task. The judgment and the decision event carry the
    attempt (the task's lease count): a unique index allows one of each per attempt.

    Retry-safe: the same moderator sending the same verdict again for a task they
    already finished gets the first result back (``replayed=True``), nothing new is
    written. Item tasks decide the item (a human decision supersedes automatic ones);
    golden items record the judgment against the known answer as well. Pair tasks
    (``same`` / ``different``, for calibrating the similarity reuse distance) record a
    judgment only.
    """
    task = queues.get_task(session=session, task_id=task_id)
    if task.task_type == "item":
        policy.check(label)
    elif label not in PAIR_ANSWERS:
        raise ValidationFailed(f"a pair task is answered with one of {list(PAIR_ANSWERS)}, "
                               f"not {label!r}")
    if time_spent_ms is not None and not (0 <= time_spent_ms <= 24 * 3600 * 1000):
        raise ValidationFailed("time_spent_ms must be between 0 and one day")
    queue_name = task.queue.name  # loaded with the task; the finishing UPDATE reloads only it
    try:
        attempt = queues.finish_leased(session=session, task=task, user=user, now=now)
    except LeaseLost:
        replay = _replayed(session=session, task=task, user=user, label=label)
        if replay is None:
            raise
        return replay
    # Only the golden columns: loading the whole item (text, metadata) is wasted here.
    is_golden, golden_label = session.execute(
        select(Item.is_golden, Item.golden_label).where(Item.id == task.item_id)).one()
    judgment = Judgment(
        item_id=task.item_id, task_id=task.id, task_attempt=attempt, worker_kind="moderator",
        user_id=user.id, worker_id=user.username, label=label, time_spent_ms=time_spent_ms,
        is_golden=is_golden and task.task_type == "item",
        golden_label=golden_label if task.task_type == "item" else None, comment=comment,
        created_at=now)
    session.add(judgment)
    session.flush()
    event_id: int | None = None
    if task.task_type == "item":
        details = {"queue": queue_name}
        if task.payload:
            details.update({k: v for k, v in task.payload.items()
                            if k in ("spot_check_of", "appeal_id")})
        [event_id] = record_decisions(session=session, decisions=[NewDecision(
            item_id=task.item_id, label=label, source="moderator", user_id=user.id,
            task_id=task.id, task_attempt=attempt, comment=comment, details=details)],
            now=now)
        if task.payload and "appeal_id" in task.payload:  # an APPEALS task ends its appeal
            from backend.appeals.service import resolve_from_verdict

            resolve_from_verdict(session=session, task=task, event_id=event_id, label=label,
                                 user_id=user.id, comment=comment, now=now)
    if task.task_type == "pair":
        from backend.calibration.service import pair_task_answered

        if not pair_task_answered(session=session, task=task):
            # a pair wants QUORUM_CALIBRATION_PAIR_OVERLAP answers from different people:
            # back to the queue (a new attempt for the next one), never again to this one
            queues.reopen_for_others(session=session, task=task, user=user, now=now)
    return VerdictResult(task=task, judgment_id=judgment.id, event_id=event_id)


def _replayed(*, session: Session, task: Task, user: User, label: str) -> VerdictResult | None:
    """The first result of ``user``'s identical verdict on the finished ``task``, if any."""
    if task.state != "done":
        return None
    prior = session.scalar(select(Judgment).where(Judgment.task_id == task.id,
                                                  Judgment.user_id == user.id,
                                                  Judgment.worker_kind == "moderator")
                           .order_by(Judgment.id.desc()).limit(1))
    if prior is None or prior.label != label:
        return None
    event_id = session.scalar(select(DecisionEvent.id).where(
        DecisionEvent.task_id == task.id, DecisionEvent.user_id == user.id,
        DecisionEvent.source == "moderator").order_by(DecisionEvent.id.desc()).limit(1))
    return VerdictResult(task=task, judgment_id=prior.id, event_id=event_id, replayed=True)
