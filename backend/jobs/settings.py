"""Job settings (``QUORUM_JOBS_*``): how ingest hands work over, batches, schedules, workers."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class JobSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUORUM_JOBS_", extra="ignore")

    #: Default of ``POST /api/v1/items?wait=``: route inside the request (the old
    #: behaviour) instead of answering at once with the items ``received``.
    ingest_wait: bool = False
    #: Items per routing job (one job = one transaction of ``route_items``).
    route_batch_size: int = Field(500, ge=1, le=10_000)
    #: A ``route`` job also routes up to this many other ``received`` items whose own
    #: jobs have not started (claimed with advisory locks: two workers never take the
    #: same items), so a backlog is routed in batches. 0: each job routes its own only.
    route_coalesce: int = Field(64, ge=0, le=10_000)
    #: Run the in-process worker thread in the API (SQLite; ``quorum serve`` sets it).
    inline_worker: bool = False
    #: Seconds the in-process worker sleeps when it finds nothing to do.
    inline_poll_seconds: float = Field(2.0, gt=0)
    #: Jobs one ``quorum worker`` process runs at the same time (threads).
    worker_concurrency: int = Field(2, ge=1, le=64)
    #: Seconds between a worker's heartbeats; a worker silent for ``stalled_seconds`` is
    #: dead and its running jobs are retried.
    heartbeat_seconds: float = Field(5.0, gt=0)
    stalled_seconds: float = Field(20.0, gt=0)
    #: Attempts of a failing job before it is left ``failed`` (exponential backoff).
    max_attempts: int = Field(5, ge=1)
    #: Seconds a periodic task may run before it stops at its next step (the rest waits
    #: for its next run).
    periodic_timeout_seconds: float = Field(600.0, gt=0)
    #: Schedules (cron; a sixth field is seconds).
    expire_leases_cron: str = "* * * * *"
    crowd_sync_cron: str = "*/5 * * * *"
    propose_thresholds_cron: str = "30 3 * * *"
    deliver_cron: str = "* * * * * */10"
    stalled_cron: str = "* * * * * */5"
    #: Moderators' daily capacity (runs only with ``QUORUM_MODERATOR_DAILY_CAPACITY``):
    #: move what they cannot work today to the crowd, the lowest value first.
    moderator_overflow_cron: str = "*/5 * * * *"
    #: Run ``crowd sync`` on its schedule (needs ``QUORUM_CROWD_TOLOKA_URL``).
    crowd_sync_enabled: bool = False
    #: A crowd queue is pushed once it holds this many pending tasks.
    crowd_push_min_tasks: int = Field(1, ge=1)
    #: Hours finished jobs are kept in ``procrastinate_jobs``.
    keep_finished_hours: int = Field(72, ge=1)
    #: A file the worker touches every ``heartbeat_seconds`` from its event loop (a stuck
    #: worker stops touching it): the container health check reads it. Empty: none.
    heartbeat_file: str = ""


class AutoApplySettings(BaseSettings):
    """``QUORUM_CALIBRATION_AUTO_APPLY``: the scheduled calibration applies a backed
    proposal itself (audited as ``thresholds.auto_apply``); off, it only proposes."""

    model_config = SettingsConfigDict(env_prefix="QUORUM_CALIBRATION_", extra="ignore")

    auto_apply: bool = False


@lru_cache
def get_job_settings() -> JobSettings:
    return JobSettings()
