"""The stages as plain service functions, shared by the API, the CLI, the demo and the
job engine (``backend/jobs/engine.py`` on PostgreSQL, ``backend/jobs/inline.py`` on SQLite).

Routing is idempotent: ``route_received`` routes only the items still ``received`` and
locks their status rows first, so a job retried after its worker died (its transaction
rolled back, or committed just before the kill) routes each item exactly once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from backend.db import in_values, read_only, transaction, utcnow
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
                .where(in_values(session, ItemStatus.item_id, ids[start:start + 1000]),
                       ItemStatus.state == RECEIVED)
                .order_by(ItemStatus.item_id))
        if lock:
            stmt = stmt.with_for_update()
        todo.extend(session.scalars(stmt))
    return todo


#: advisory-lock key space of routing claims: (1 << 62) | item id
_CLAIM_SPACE = 1 << 62
_CLAIM_OWN = text("SELECT pg_advisory_lock(CAST(:space AS bigint) | CAST(:id AS bigint))")
_TRY_CLAIM = text(
    "SELECT pg_try_advisory_lock(CAST(:space AS bigint) | CAST(:id AS bigint))")
_CLAIM_OTHERS = text(
    "SELECT c.item_id FROM (SELECT item_id FROM item_status WHERE state = 'received' "
    "AND NOT (item_id = ANY(:own)) ORDER BY item_id LIMIT :scan) AS c "
    "WHERE pg_try_advisory_lock(CAST(:space AS bigint) | CAST(c.item_id AS bigint)) "
    "LIMIT :n")


@dataclass
class _Claim:
    """What one routing job claimed (`_claimed`)."""

    others: list[int] = field(default_factory=list)  # other jobs' items it took
    taken: list[int] = field(default_factory=list)  # its own items another job holds
    conn: Any = None

    def wait_for_taken(self) -> None:
        """Wait until the jobs that took our items have finished (their locks go with
        their commit, or with their connection if they died); at most 30 s each, then
        route them anyway (the status-row locks keep that exactly-once)."""
        for item_id in self.taken:
            with contextlib.suppress(OperationalError):
                self.conn.execute(_CLAIM_OWN, {"space": _CLAIM_SPACE, "id": item_id})


@contextlib.contextmanager
def _claimed(sessions: sessionmaker[Session], own: Sequence[int], extra: int
             ) -> Iterator[_Claim]:
    """PostgreSQL: claim ``own`` and up to ``extra`` other ``received`` items (oldest
    first) for one routing job, with session advisory locks held until the block ends.

    Items are only ever taken when nobody holds them (``pg_try_advisory_lock``), so two
    workers never encode the same items. A job whose own items another job took
    (``taken``) prepares only the rest, then waits for that job before its routing
    transaction (`_Claim.wait_for_taken`) and finds them routed. The locks live on a
    connection of their own: a worker that dies releases them with its connection, and
    the items it had taken are routed by their own jobs, which still exist. SQLite (one
    in-process worker, which routes the oldest items in batches anyway), or ``extra`` 0:
    nothing is claimed."""
    bind = sessions.kw["bind"]
    if extra <= 0 or bind.dialect.name != "postgresql":
        yield _Claim()
        return
    with bind.connect() as raw:
        conn = raw.execution_options(isolation_level="AUTOCOMMIT")
        try:
            conn.execute(text("SELECT set_config('lock_timeout', '30s', false)"))
            own_ids = sorted({int(i) for i in own})
            taken = [i for i in own_ids if not conn.scalar(
                _TRY_CLAIM, {"space": _CLAIM_SPACE, "id": i})]
            others = list(conn.scalars(_CLAIM_OTHERS, {
                "space": _CLAIM_SPACE, "own": own_ids, "scan": extra * 4, "n": extra}))
            yield _Claim(others=others, taken=taken, conn=conn)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock_all()"))
            conn.execute(text("RESET lock_timeout"))


def route_staged(*, sessions: sessionmaker[Session], item_ids: Sequence[int] | None,
                 settings: Settings, limit: int = 500,
                 now: datetime | None = None, coalesce: int = 0) -> RoutingSummary:
    """Route ``item_ids`` (None: the oldest ``limit`` received items); with
    ``coalesce``, also up to that many other ``received`` items whose own jobs have not
    started (`_claimed`: the ``route`` job, ``QUORUM_JOBS_ROUTE_COALESCE``), so a backlog
    is routed in batches instead of one ingest call's items per job."""
    if item_ids is None or coalesce <= 0:
        return _route_staged(sessions=sessions, item_ids=item_ids, settings=settings,
                             limit=limit, now=now)
    with _claimed(sessions, item_ids, coalesce) as claim:
        return _route_staged(sessions=sessions, item_ids=[*item_ids, *claim.others],
                             settings=settings, limit=limit, now=now,
                             not_prepared=claim.taken, before_routing=claim.wait_for_taken)


def _route_staged(*, sessions: sessionmaker[Session], item_ids: Sequence[int] | None,
                  settings: Settings, limit: int = 500, now: datetime | None = None,
                  not_prepared: Sequence[int] = (),
                  before_routing: Callable[[], None] | None = None) -> RoutingSummary:
    """Route ``item_ids`` (None: the oldest ``limit`` received items) in steps, so that
    no rule is evaluated while a lock other requests need is held:

    1. a read-only session (SQLite: a deferred transaction, no write lock) finds the
       items still ``received`` and evaluates the rules on them (`precompute_rules`);
    2. the routing transaction re-checks which are still ``received`` (locking their
       status rows on PostgreSQL) and routes those, reusing each rule outcome whose rule
       versions and item inputs are unchanged (anything else is evaluated again there).

    Between the two, also outside any transaction: the items' images are loaded (http(s)
    ones downloaded, local files read) and PDQ-hashed (``backend.media.images.prefetch``),
    the items without a vector are encoded (``ml_adapter.service.prepare_embeddings``)
    and the hash-bank index is built if it is stale (``hashes.matching.warm_banks``). The
    routing transaction stores those vectors and hashes where the item's inputs are
    unchanged, and computes anything else itself. The routing stays one atomic,
    idempotent transaction (`route_received`).

    ``not_prepared``: items routed but not prepared here (another job is preparing them:
    `_claimed`); ``before_routing`` runs between the preparation and the transaction."""
    from backend.hashes.matching import warm_banks
    from backend.media.images import prefetch, prefetched
    from backend.ml_adapter.hooks import MLHooks
    from backend.ml_adapter.service import prepare_embeddings, prepared_vectors
    from backend.routing.hooks import get_pipeline_hooks

    with read_only(sessions) as rs:
        if item_ids is None:
            ids = received_ids(session=rs, limit=limit)
        else:
            ids = _still_received(rs, item_ids, lock=False)
        if not ids:
            return RoutingSummary()
        skip = set(not_prepared)
        mine = [i for i in ids if i not in skip]
        pre = precompute_rules(session=rs, item_ids=mine)
    # no lock is held while images download or hash, the encoder runs or banks load
    images = prefetch(sessions=sessions, item_ids=mine)
    hooks = get_pipeline_hooks()
    vectors = (prepare_embeddings(sessions=sessions, item_ids=mine, images=images,
                                  ml=hooks.ml)
               if isinstance(hooks, MLHooks) and mine else {})
    warm_banks(sessions=sessions)
    if before_routing is not None:
        before_routing()
    with prefetched(images), prepared_vectors(vectors), transaction(sessions) as session:
        return route_received(session=session, item_ids=ids, now=now or utcnow(),
                              settings=settings, precomputed=pre)


def warm_embed_worker() -> str | None:
    """Load what routing embeds with (`ml_adapter.service.warm_up`) before a worker takes
    its first ``route`` job; None when the pipeline has no ML. Without it the first job
    of every fresh embed worker stalls for the encoder's load (~6 s for MiniLM here), and
    a worker scaled out under a backlog is that much late."""
    from backend.ml_adapter.hooks import MLHooks
    from backend.ml_adapter.service import warm_up
    from backend.routing.hooks import get_pipeline_hooks

    hooks = get_pipeline_hooks()
    return warm_up(hooks.ml) if isinstance(hooks, MLHooks) else None


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
