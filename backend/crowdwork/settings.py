"""Crowd settings (``QUORUM_CROWD_*``): where Toloka is, and the default pool configuration."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from crowd.config import CrowdConfig

_POOL = CrowdConfig()  # the library's defaults are ours: one place for each number
#: The pool fields settable one by one here (the rest through ``pool_config``).
POOL_FIELDS = ("overlap", "min_answers", "max_overlap", "target_confidence",
               "tasks_per_suite", "golden_per_suite", "reward_per_task", "aggregation")


class CrowdSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUORUM_CROWD_", extra="ignore")

    #: Toloka API URL (``https://toloka.dev`` or a standalone emulator,
    #: ``python -m crowd.emulator``). Unset: commands start a local emulator with
    #: simulated workers for their own run (loopback only).
    toloka_url: str | None = None
    #: Toloka OAuth/API token (unused by the emulator).
    toloka_token: SecretStr = SecretStr("")
    #: HTTP time-out and retries (408/429/5xx and time-outs) of the Toloka client.
    request_timeout_s: float = 10.0
    request_retries: int = 5
    #: Answers per item to start with, the minimum for a decision, the dynamic-overlap cap.
    overlap: int = _POOL.overlap
    min_answers: int = _POOL.min_answers
    max_overlap: int = _POOL.max_overlap
    #: Aggregated confidence under which an item gets more answers (dynamic overlap).
    target_confidence: float = _POOL.target_confidence
    #: Real tasks and control (golden) tasks per task suite.
    tasks_per_suite: int = _POOL.tasks_per_suite
    golden_per_suite: int = _POOL.golden_per_suite
    #: Pay per task in dollars (control tasks are paid like real ones).
    reward_per_task: float = _POOL.reward_per_task
    #: Aggregation method per pool: ``mv``, ``wawa``, ``ds``, ``sds``, ``glad`` (or ``gold_mv``).
    aggregation: str = _POOL.aggregation
    #: Distinct control tasks per pool, as a share of its real items (at least ``golden_min``,
    #: at most ``golden_max``); taken from golden items with a known label (the ``GL`` queue).
    golden_rate: float = 0.1
    golden_min: int = 10
    golden_max: int = 500
    #: The golden set's life cycle (`backend.crowdwork.gold`): a golden item shown this
    #: many times as a control task (crowd answers, all pools) is retired and never mixed
    #: into a pool again (workers could have memorised it); 0 = no cap.
    golden_max_exposures: int = 200
    #: Keep at least this many active golden items: each push first promotes items whose
    #: verdict two humans agree on (a moderator and the crowd's majority, or two
    #: moderators) until there are; 0 = never promote automatically.
    golden_target: int = 0
    #: The crowd half of "a moderator and the crowd agree": at least this many crowd
    #: answers on the item, the moderator's label with at least this share of them.
    golden_crowd_min_answers: int = 3
    golden_crowd_agreement: float = 0.7
    #: Items pushed per pool; the rest of the queue stays pending for a later push (0 = all).
    max_items_per_pool: int = 0
    #: Dollars the crowd may be committed to per day (UTC): a push takes only as many items
    #: as the day's budget left pays for at the expected cost per item, those whose
    #: decision is likeliest to flip first (`backend.crowdwork.service.budget_cap`); a
    #: push with nothing left is refused with the reason. 0 = no limit.
    daily_budget: float = 0.0
    #: ``quorum demo``: items pushed per crowd queue (the rest stay pending), to keep it short.
    demo_items_per_queue: int = 300
    #: The moderator queue kind for items the crowd did not agree on at ``max_overlap``.
    disagree_kind: str = "CROWD_DISAGREE"
    #: Other `crowd.config.CrowdConfig` fields (JSON), e.g. ``{"golden_min_accuracy": 0.7}``.
    pool_config: dict[str, Any] = Field(default_factory=dict)
    #: The local emulator: number of simulated workers (10% spammers) and its seed.
    emulator_workers: int = 30
    emulator_seed: int = 0
    #: Rounds (pull, review, aggregate, ask for more) a local-emulator run makes at most.
    max_rounds: int = 8

    def crowd_config(self, **override: Any) -> CrowdConfig:
        """The pool configuration: these settings, ``pool_config``, then ``override``."""
        base = {name: getattr(self, name) for name in POOL_FIELDS}
        return CrowdConfig.from_mapping({**base, **self.pool_config, **override})


@lru_cache
def get_crowd_settings() -> CrowdSettings:
    return CrowdSettings()
