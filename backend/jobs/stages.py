"""The stages as plain service functions, shared by the API, the CLI, the demo and the
job engine (``backend/jobs/engine.py`` on PostgreSQL, ``backend/jobs/inline.py`` on SQLite).

Routing is idempotent: ``route_received`` routes only the items still ``received`` and
locks their status rows first, so a job retried after its worker died (its transaction
rolled back, or committed just before the kill) routes each item exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backend.db import read_only, transaction, utcnow
from backend.decisions.models import ItemStatus
from backend.routing.pipeline import PrecomputedRules, RoutingSummary, precompute_rules, route_items
from backend.settings import Settings

RECEIVED = "received"


# ---------------------------------------------------------------- routing
def route_received(*, session: Session, item_ids: Sequence[int], now: datetime,
                   settings: Settings, precomputed: PrecomputedRules | None = None
                   ) -> RoutingSummary:
    """Route those of ``item_ids`` that are still ``received`` (one transaction: the
    caller's). PostgreSQL locks their status rows (``FOR UPDATE``): a second router of the
    same items waits, then finds them routed; SQLite's write lock does the same.
    ``precomputed``: rule outcomes evaluated before this transaction (`route_staged`)."""
    if not item_ids:
        return RoutingSummary()
    todo = _still_received(session, item_ids,
                           lock=session.get_bind().dialect.name == "postgresql")
    return route_items(session=session, item_ids=todo, now=now, settings=settings,
                       precomputed=precomputed)


def _still_received(session: Session, item_ids: Sequence[int], *, lock: bool) -> list[int]:
    todo: list[int] = []
    ids = sorted(set(item_ids))
    for start in range(0, len(ids), 1000):
        stmt = (select(ItemStatus.item_id)
                .where(ItemStatus.item_id.in_(ids[start:start + 1000]),
                       ItemStatus.state == RECEIVED)
                .order_by(ItemStatus.item_id))
        if lock:
            stmt = stmt.with_for_update()
        todo.extend(session.scalars(stmt))
    return todo


def route_staged(*, sessions: sessionmaker[Session], item_ids: Sequence[int] | None,
                 settings: Settings, limit: int = 500,
                 now: datetime | None = None) -> RoutingSummary:
    """Route ``item_ids`` (None: the oldest ``limit`` received items) in two steps, so
    that no rule is evaluated while a lock other requests need is held:

    1. a read-only session (SQLite: a deferred transaction, no write lock) finds the
       items still ``received`` and evaluates the rules on them (`precompute_rules`);
    2. the routing transaction re-checks which are still ``received`` (locking their
       status rows on PostgreSQL) and routes those, reusing each rule outcome whose rule
       versions and item inputs are unchanged (anything else is evaluated again there).

    Between the two, the items' http(s) images are downloaded (``backend.media.images``),
    also outside any transaction. The routing itself stays one atomic, idempotent
    transaction (`route_received`)."""
    from backend.media.images import prefetch, prefetched

    with read_only(sessions) as rs:
        if item_ids is None:
            ids = received_ids(session=rs, limit=limit)
        else:
            ids = _still_received(rs, item_ids, lock=False)
        if not ids:
            return RoutingSummary()
        pre = precompute_rules(session=rs, item_ids=ids)
    # http(s) images are downloaded outside any transaction (SQLite's write lock)
    images = prefetch(sessions=sessions, item_ids=ids)
    with prefetched(images), transaction(sessions) as session:
        return route_received(session=session, item_ids=ids, now=now or utcnow(),
                              settings=settings, precomputed=pre)


def received_ids(*, session: Session, limit: int) -> list[int]:
    """The oldest items waiting for routing (the in-process worker's queue on SQLite)."""
    return list(session.scalars(select(ItemStatus.item_id).where(ItemStatus.state == RECEIVED)
                                .order_by(ItemStatus.item_id).limit(limit)))


def route_backlog(*, sessions: sessionmaker[Session], settings: Settings, batch_size: int,
                  max_batches: int | None = None) -> RoutingSummary:
    """Route every ``received`` item, ``batch_size`` per transaction (SQLite's dispatcher;
    on PostgreSQL the same work arrives as jobs)."""

    total = RoutingSummary()
    n = 0
    while max_batches is None or n < max_batches:
        s = route_staged(sessions=sessions, item_ids=None, settings=settings,
                         limit=batch_size)
        if not s.items:
            break
        total.merge(s)
        n += 1
    return total


# ---------------------------------------------------------------- scheduled work
def expire_leases(*, sessions: sessionmaker[Session]) -> dict[str, Any]:
    from backend.queues.service import expire_leases as expire

    with transaction(sessions) as session:
        return {"returned": expire(session=session, now=utcnow())}


@dataclass
class CrowdSyncPlan:
    pushed: list[dict[str, Any]] = field(default_factory=list)
    open_pools: list[int] = field(default_factory=list)


def crowd_queues_due(*, session: Session, min_tasks: int) -> list[str]:
    """Every crowd queue (any crowd kind, any day) holding at least ``min_tasks`` pending
    tasks, oldest day first."""
    from backend.queues.service import list_queues

    rows = list_queues(session=session, audience="crowd")
    return [r.queue.name for r in sorted(rows, key=lambda r: (r.queue.day, r.queue.name))
            if r.pending >= min_tasks]


def crowd_push_due(*, rt: Any, min_tasks: int, deadline: Any = None) -> list[dict[str, Any]]:
    """Push every crowd queue that filled up (``crowdwork.service.push_queue``: a re-run
    resumes, never duplicates). ``rt`` is a ``crowdwork.service.CrowdRuntime``."""
    from backend.crowdwork.service import BudgetSpent, push_queue

    with rt.sessions() as session:
        names = crowd_queues_due(session=session, min_tasks=min_tasks)
    pushed = []
    for name in names:
        if deadline is not None and deadline.expired:
            break
        try:
            s = push_queue(rt=rt, queue_name=name)
        except BudgetSpent:  # the day's crowd budget is committed: the rest waits
            break
        if not s.already_open:
            pushed.append({"queue": name, "pool": s.pool_id, "items": s.items})
    return pushed


def open_pools(*, sessions: sessionmaker[Session]) -> list[int]:
    from backend.crowdwork.service import open_pool_ids

    with sessions() as session:
        return open_pool_ids(session=session)


def crowd_pull(*, rt: Any, pool_id: int) -> dict[str, Any]:
    """One pull round of one pool (``crowdwork.service.pull_pool``)."""
    from backend.crowdwork.service import pull_pool

    s = pull_pool(rt=rt, pool_id=pool_id)
    return {"pool": pool_id, "state": s.state, "new_answers": s.new_answers,
            "decided": getattr(s, "decided", 0)}


def propose_thresholds(*, sessions: sessionmaker[Session], auto_apply: bool) -> dict[str, Any]:
    """Calibrate the classifier on the labels so far; a backed proposal becomes a proposed
    threshold set, applied (and audited) only when ``auto_apply`` is on."""
    from backend.calibration import thresholds
    from backend.calibration.service import run_calibration
    from backend.errors import ValidationFailed
    from backend.users.service import audit

    with transaction(sessions) as session:
        try:
            run = run_calibration(session=session, kind="classifier")
        except ValidationFailed as exc:
            return {"proposed": None, "message": exc.message}
        version = (run.result or {}).get("proposed_version")
        out: dict[str, Any] = {"run": run.id, "proposed": version, "applied": False,
                               "message": run.message}
        if version is not None and auto_apply:
            thresholds.apply(session=session, version=version, now=utcnow())
            audit(session=session, user=None, action="thresholds.auto_apply",
                  target_type="threshold_set", target_id=version,
                  details={"calibration_run": run.id, "by": "schedule",
                           "actor": "schedule"})
            out["applied"] = True
        return out
