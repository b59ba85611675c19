"""What label pools and pair pools share: item cards, golden items, handing tasks to the crowd."""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from backend.crowdwork.models import CrowdPool, CrowdTask, GoldenItem, Judgment
from backend.items.models import Item
from backend.queues import service as queues
from backend.queues.models import Task

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # toloka-kit imports pkg_resources
    from crowd.emulator.state import POOL_ID_START


def item_card(item: Item, *, signed_at: datetime | None = None) -> dict[str, Any]:
    """What a worker sees of an item (``item_id`` + the card fields of `crowd.toloka`).

    The image is a signed, expiring Quorum URL (``backend.media.signing``), valid
    ``QUORUM_MEDIA_SIGNED_URL_TTL_SECONDS`` from ``signed_at`` (the pool's creation, so a
    retried push builds the same tasks): never a file path or the item's own URL."""
    from backend.db import utcnow
    from backend.media.signing import signed_url

    image = signed_url(item_id=item.id, now=signed_at or utcnow()) if item.image else None
    return {"item_id": str(item.id), "title": item.title or "",
            "description": item.description or "", "image": image,
            "price": item.price, "link": item.url}


def golden_items(session: Session, *, labels: Sequence[str], exclude: set[int],
                 n: int) -> list[Item]:
    """Up to ``n`` golden items with a known label among ``labels`` (oldest first, so a
    retried push builds the same plan), none of ``exclude``, none retired
    (`backend.crowdwork.gold`)."""
    retired = select(GoldenItem.item_id).where(GoldenItem.state == "retired")
    rows = session.scalars(
        select(Item).where(Item.is_golden.is_(True), Item.golden_label.in_(list(labels)),
                           Item.id.not_in(retired))
        .order_by(Item.id).limit(n + len(exclude)))
    return [it for it in rows if it.id not in exclude][:n]


def pending_tasks(session: Session, *, queue_id: int, task_type: str,
                  limit: int | None) -> list[Task]:
    """The queue's pending tasks of ``task_type``, oldest first, at most ``limit`` (None:
    all): what a new pool takes."""
    stmt = (select(Task).where(Task.queue_id == queue_id, Task.state == "pending",
                               Task.task_type == task_type).order_by(Task.id))
    return list(session.scalars(stmt.limit(limit) if limit else stmt))


def lease_to_crowd(session: Session, *, task_ids: Sequence[int], now: datetime) -> None:
    """Lease queue tasks to the crowd: no owner and no deadline, so `lease_next` and
    `expire_leases` never hand them to moderators."""
    session.execute(update(Task).where(Task.id.in_(list(task_ids)))
                    .values(state="leased", leased_at=now, lease_owner_id=None,
                            lease_expires_at=None, lease_count=Task.lease_count + 1)
                    .execution_options(synchronize_session=False))


def return_to_queue(session: Session, *, task_ids: Sequence[int]) -> None:
    """Give crowd-leased tasks back to their queue (pending again, for a later push)."""
    if task_ids:
        session.execute(update(Task).where(Task.id.in_(list(task_ids)), Task.state == "leased")
                        .values(state="pending", leased_at=None, lease_owner_id=None,
                                lease_expires_at=None)
                        .execution_options(synchronize_session=False))


def close_crowd_tasks(session: Session, *, pool_id: int, outcome: Mapping[int, str],
                      n_answers: Mapping[int, int], now: datetime,
                      reopen: Collection[str] = ()) -> list[int]:
    """Record how each item (``outcome``: item id → outcome) left pool ``pool_id``, with
    the answers it got, and mark its queue task done, except for outcomes in ``reopen``:
    their queue task ids are returned (for `return_to_queue`)."""
    cts = list(session.scalars(select(CrowdTask).where(
        CrowdTask.pool_id == pool_id, CrowdTask.item_id.in_(list(outcome)))))
    task_ids = [ct.task_id for ct in cts if ct.task_id is not None]
    tasks = {t.id: t for t in session.scalars(select(Task).where(Task.id.in_(task_ids)))
             } if task_ids else {}
    reopened: list[int] = []
    for ct in cts:
        ct.outcome = outcome[ct.item_id]
        ct.aggregated = True
        ct.overlap = max(ct.overlap, n_answers.get(ct.item_id, ct.overlap))
        if ct.outcome in reopen:
            if ct.task_id is not None:
                reopened.append(ct.task_id)
            continue
        task = tasks.get(ct.task_id) if ct.task_id is not None else None
        if task is not None and task.state != "done":
            queues.complete(session=session, task=task, now=now)
    return reopened


def _number(value: str | None, base: int = 10) -> int:
    try:
        return int(value, base) if value else 0
    except ValueError:  # an id of another Toloka
        return 0


def emulator_id_base(*, session: Session) -> int:
    """Where a fresh local emulator's ids start: after every emulator id recorded so far
    (pools are unique by Toloka id, judgments by assignment id), so a second offline run
    never reuses one."""
    ids = [0]
    for project, pool, training in session.execute(select(
            CrowdPool.toloka_project_id, CrowdPool.toloka_pool_id, CrowdPool.toloka_training_id)):
        ids += [_number(project), _number(pool) - POOL_ID_START,
                _number(training) - POOL_ID_START]
    ids.append(_number(session.scalar(select(func.max(CrowdTask.toloka_task_id))), 16))
    ids.append(_number(session.scalar(select(func.max(Judgment.assignment_id))
                                      .where(Judgment.worker_kind == "crowd")), 16))
    return max(ids)
