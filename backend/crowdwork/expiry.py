"""The way back for crowd leases: pools whose Toloka is gone or that outlived their deadline.

A push leases its queue's tasks to the crowd with no owner and no deadline (moderators
never see them), so a pool that can no longer answer would hold them forever: a
local emulator lives only for the command that started it (a command killed mid-round
leaves an ``open`` pool on nothing), and a pool open past its lifetime
(``pool_lifetime_days``, which Toloka closes too) gets no more answers.

`stale_pools` finds them — ``open``/``intent`` pools past ``created_at +
pool_lifetime_days``, and ``open`` pools pushed to a local emulator that no longer
answers for them (probed: connection refused, or the pool missing or not ours) —
and `expire_pool` gives their open tasks back: state ``expired`` (with the reason, when
and how many tasks in ``config["expired"]``), each open real task's ``CrowdTask.outcome``
``expired``, its queue task ``pending`` again; judgments already pulled stay. A later
``quorum crowd push`` of the queue then takes those tasks into a new pool (push also
expires the stale pools of its queue first, so a plain re-run resumes).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.crowdwork.common import return_to_queue
from backend.crowdwork.models import CrowdPool, CrowdTask
from backend.crowdwork.service import OPEN_STATES, CrowdRuntime, get_pool, pool_config
from backend.db import utcnow
from backend.errors import Conflict
from backend.queues.models import Task

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # toloka-kit imports pkg_resources
    import toloka.client as tc

    from crowd.toloka import MARKER, make_client

#: How long a probe of a pool's local emulator may take.
PROBE_TIMEOUT_S = 2.0


@dataclass
class ExpiredPool:
    pool_id: int
    queue: str | None
    reason: str
    returned: int


def deadline(pool: CrowdPool) -> datetime:
    """When ``pool`` stops counting as alive: its creation plus ``pool_lifetime_days``."""
    return pool.created_at + timedelta(days=pool_config(pool).pool_lifetime_days)


def emulator_gone(*, url: str, toloka_pool_id: str, key: str) -> bool:
    """Whether the local emulator at ``url`` no longer holds our pool (nothing listens,
    or the pool there is missing or carries another key)."""
    try:
        client = make_client(url=url, retries=0, timeout=PROBE_TIMEOUT_S)
        pool = client.get_pool(toloka_pool_id)
    except Exception:  # noqa: BLE001 - refused, reset, 404, anything: it cannot answer
        return True
    return key not in ((pool.metadata or {}).get(MARKER) or [])


def stale_reason(pool: CrowdPool, *, now: datetime, current_url: str | None) -> str | None:
    """Why ``pool`` should give its tasks back, or None. Probes a local emulator (a remote
    call: never inside a transaction)."""
    if pool.state not in OPEN_STATES:
        return None
    due = deadline(pool)
    if now >= due:
        return (f"open past its deadline {due:%Y-%m-%d %H:%M} UTC "
                f"(pool_lifetime_days={pool_config(pool).pool_lifetime_days})")
    url = pool.config.get("toloka_url")
    if (pool.state == "open" and pool.config.get("local_emulator") and url
            and url != current_url and pool.toloka_pool_id
            and emulator_gone(url=url, toloka_pool_id=pool.toloka_pool_id,
                              key=str(pool.config.get("key")))):
        return f"its local emulator ({url}) is gone"
    return None


def expire_pool(*, session: Session, pool: CrowdPool, reason: str, now: datetime) -> int:
    """Give ``pool``'s open tasks back to their queue and mark it ``expired``; returns how
    many queue tasks went back to pending."""
    if pool.state not in OPEN_STATES:
        raise Conflict(f"crowd pool {pool.id} is {pool.state}: only an open or unfinished "
                       "pool can expire")
    cts = list(session.scalars(select(CrowdTask).where(CrowdTask.pool_id == pool.id,
                                                       CrowdTask.outcome.is_(None))))
    task_ids = [ct.task_id for ct in cts if ct.task_id is not None]
    for ct in cts:
        ct.outcome = "expired"
    leased = list(session.scalars(select(Task.id).where(Task.id.in_(task_ids),
                                                        Task.state == "leased"))) \
        if task_ids else []
    return_to_queue(session, task_ids=leased)
    pool.state = "expired"
    pool.config = {**pool.config, "expired": {"at": now.isoformat(), "reason": reason,
                                              "returned": len(leased)}}
    pool.updated_at = now
    session.flush()
    return len(leased)


def expire_stale_pools(*, rt: CrowdRuntime, now: datetime | None = None,
                       queue_id: int | None = None) -> list[ExpiredPool]:
    """Expire every stale pool (of ``queue_id``, else all): the probes run between
    transactions, the expiry in one."""
    now = now or utcnow()
    with rt.sessions() as session:
        stmt = select(CrowdPool).where(CrowdPool.state.in_(OPEN_STATES)).order_by(CrowdPool.id)
        if queue_id is not None:
            stmt = stmt.where(CrowdPool.queue_id == queue_id)
        pools = list(session.scalars(stmt))
        session.expunge_all()
    reasons = {p.id: why for p in pools
               if (why := stale_reason(p, now=now, current_url=rt.toloka_url)) is not None}
    out: list[ExpiredPool] = []
    if not reasons:
        return out
    with rt.sessions.begin() as session:
        for pool_id, why in reasons.items():
            pool = get_pool(session=session, pool_id=pool_id)
            if pool.state not in OPEN_STATES:
                continue  # resolved meanwhile
            n = expire_pool(session=session, pool=pool, reason=why, now=now)
            out.append(ExpiredPool(pool_id=pool_id, queue=pool.config.get("queue"),
                                   reason=why, returned=n))
    return out


def expire_pool_now(*, rt: CrowdRuntime, pool_id: int, now: datetime | None = None,
                    reason: str = "expired by hand") -> ExpiredPool:
    """Expire one open or unfinished pool whatever its state of health (``quorum crowd
    expire --pool N``); its Toloka pool is closed when that Toloka still answers."""
    now = now or utcnow()
    with rt.sessions.begin() as session:
        pool = get_pool(session=session, pool_id=pool_id)
        toloka_id, local = pool.toloka_pool_id, bool(pool.config.get("local_emulator"))
        n = expire_pool(session=session, pool=pool, reason=reason, now=now)
        queue = pool.config.get("queue")
    if toloka_id and not local:
        # a Toloka that cannot close it will not hand its tasks out either
        with contextlib.suppress(tc.exceptions.ApiError, httpx.HTTPError, OSError):
            rt.client.close_pool(toloka_id)
    return ExpiredPool(pool_id=pool_id, queue=queue, reason=reason, returned=n)
