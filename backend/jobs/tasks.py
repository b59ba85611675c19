"""Every queued and periodic task, as plain functions of ids and settings: each opens its
own transaction(s). The job engine (PostgreSQL) and the in-process worker (SQLite) call
these same functions; only the dispatch differs.

| task | queue | what |
|---|---|---|
| ``route`` | ``embed`` | embed + score + route a batch of ``received`` items (``route_items``) |
| ``expire_leases`` | ``periodic`` | return expired moderator leases to their queues |
| ``crowd_sync`` | ``crowd`` | push every crowd queue that filled up, then pull each open pool |
| ``crowd_pull`` | ``crowd`` | one pull round of one pool (lock: one pull per pool at a time) |
| ``propose_thresholds`` | ``periodic`` | calibrate; apply a backed proposal only with auto-apply |
| ``deliver`` | ``deliver`` | sequence the decision feed, send due webhooks |
| ``moderator_overflow`` | ``periodic`` | past moderators' capacity: low-value tasks to the crowd |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backend.db import get_sessionmaker, utcnow
from backend.jobs import stages
from backend.jobs.runs import AlreadyRunning, track
from backend.jobs.settings import JobSettings, get_job_settings
from backend.settings import get_settings


def route(*, item_ids: list[int]) -> dict[str, Any]:
    """The ``route`` job: one batch of item ids (rules evaluated and http(s) images
    downloaded before its routing transaction: ``stages.route_staged``)."""
    settings = get_settings()
    s = stages.route_staged(sessions=get_sessionmaker(), item_ids=item_ids, settings=settings,
                            coalesce=get_job_settings().route_coalesce)
    return {"items": s.items, "decided": sum(s.decided.values()),
            "queued": sum(s.queued.values())}


def _timeout() -> float:
    return get_job_settings().periodic_timeout_seconds


def expire_leases() -> dict[str, Any]:
    sessions = get_sessionmaker()
    with track(sessions=sessions, name="expire_leases", timeout_s=_timeout()) as run:
        run.detail = stages.expire_leases(sessions=sessions)
        return run.detail


def auto_apply_enabled() -> bool:
    from backend.jobs.settings import AutoApplySettings

    return AutoApplySettings().auto_apply


def propose_thresholds() -> dict[str, Any]:
    sessions = get_sessionmaker()
    with track(sessions=sessions, name="propose_thresholds", timeout_s=_timeout()) as run:
        run.detail = stages.propose_thresholds(sessions=sessions,
                                               auto_apply=auto_apply_enabled())
        return run.detail


def moderator_overflow() -> dict[str, Any]:
    """Moderators' daily capacity (`backend.queues.overflow.rebalance`)."""
    from backend.db import transaction
    from backend.queues.overflow import rebalance

    sessions = get_sessionmaker()
    with track(sessions=sessions, name="moderator_overflow", timeout_s=_timeout()) as run:
        with transaction(sessions) as session:
            run.detail = rebalance(session=session, settings=get_settings(),
                                   now=utcnow()).as_dict()
        return run.detail


def deliver() -> dict[str, Any]:
    from backend.deliveries.service import run_deliveries
    from backend.deliveries.settings import get_delivery_settings
    from backend.policy import get_policy

    sessions = get_sessionmaker()
    with track(sessions=sessions, name="deliver", timeout_s=_timeout()) as run:
        run.detail = run_deliveries(sessions=sessions, cfg=get_delivery_settings(),
                                    policy=get_policy(), deadline=run.deadline)
        run.timed_out = run.deadline.expired
        return run.detail


def _open_crowd():  # noqa: ANN202 - a context manager of crowdwork.runtime.Crowd
    from backend.crowdwork.runtime import open_crowd
    from backend.crowdwork.settings import get_crowd_settings
    from backend.errors import ValidationFailed
    from backend.policy import get_policy

    crowd = get_crowd_settings()
    if not crowd.toloka_url:
        raise ValidationFailed("QUORUM_CROWD_TOLOKA_URL is unset: crowd sync works pools that "
                               "outlive it, on Toloka or a standalone emulator "
                               "(python -m crowd.emulator)")
    return open_crowd(settings=get_settings(), crowd=crowd, policy=get_policy())


def crowd_pull(*, pool_id: int) -> dict[str, Any]:
    """One pull round of one pool, recorded as a run keyed by the pool; skipped while
    another pull of the same pool runs (never two pulls of one pool at once)."""
    sessions = get_sessionmaker()
    try:
        with track(sessions=sessions, name="crowd_pull", key=f"pool:{pool_id}",
                   timeout_s=_timeout()) as run, _open_crowd() as c:
            run.detail = stages.crowd_pull(rt=c.runtime, pool_id=pool_id)
            return run.detail
    except AlreadyRunning as exc:
        return {"pool": pool_id, "skipped": exc.message}


def crowd_sync(*, pull: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Push the crowd queues that filled up, then pull every open pool: through ``pull``
    (the engine defers one ``crowd_pull`` job per pool, under a per-pool lock) or here,
    one pool after the other."""
    sessions = get_sessionmaker()
    js = get_job_settings()
    with track(sessions=sessions, name="crowd_sync", timeout_s=_timeout()) as run:
        with _open_crowd() as c:
            pushed = stages.crowd_push_due(rt=c.runtime, min_tasks=js.crowd_push_min_tasks,
                                           deadline=run.deadline)
        pools = stages.open_pools(sessions=sessions)
        for pool_id in pools:
            if run.deadline.expired:
                run.timed_out = True
                break
            (pull or (lambda pid: crowd_pull(pool_id=pid)))(pool_id)
        run.detail = {"pushed": pushed, "pools": pools}
        return run.detail


@dataclass(frozen=True)
class Periodic:
    name: str
    queue: str
    #: the ``JobSettings`` field holding its cron
    cron_field: str
    enabled: Callable[[JobSettings], bool] = lambda js: True

    def cron(self, js: JobSettings) -> str:
        return str(getattr(js, self.cron_field))


PERIODIC: tuple[Periodic, ...] = (
    Periodic("expire_leases", "periodic", "expire_leases_cron"),
    Periodic("deliver", "deliver", "deliver_cron"),
    Periodic("propose_thresholds", "periodic", "propose_thresholds_cron"),
    Periodic("crowd_sync", "crowd", "crowd_sync_cron", lambda js: js.crowd_sync_enabled),
    Periodic("moderator_overflow", "periodic", "moderator_overflow_cron",
             lambda js: get_settings().moderator_daily_capacity > 0),
)

#: What each periodic task runs in-process (the engine wraps ``crowd_sync`` itself).
RUNNERS: dict[str, Callable[[], dict[str, Any]]] = {
    "expire_leases": expire_leases, "deliver": deliver,
    "propose_thresholds": propose_thresholds, "crowd_sync": crowd_sync,
    "moderator_overflow": moderator_overflow,
}
QUEUES = ("embed", "periodic", "crowd", "deliver")
