"""Crowd configuration: every knob of a Toloka pool Quorum creates, as data."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self


@dataclass(frozen=True)
class CrowdConfig:
    """Defaults follow the seed talk's scale (≈ $0.01 per item, 15 s per item).

    Overlap: ``overlap`` answers per item to start with, more are asked (one at a
    time) for items whose aggregated confidence is under ``target_confidence`` or
    that have fewer than ``min_answers``, up to ``max_overlap``.

    Pay: ``reward_per_suite = reward_per_task * (tasks_per_suite + golden_per_suite)``
    (control tasks are paid like real ones; Toloka's minimum is $0.005).

    Quality rules: ban (project scope, ``ban_days``) when a worker's golden accuracy is
    under ``golden_min_accuracy`` after at least ``golden_min_answers`` control answers,
    and after ``fast_max_count`` suites answered faster than ``fast_seconds_per_task``
    per task; Toloka bans after ``skipped_in_row`` skipped suites. Who enforces the
    golden and fast bans is ``quality_control``: ``"toloka"`` writes them into the pool
    and Toloka bans (Quorum reads its restrictions); ``"quorum"`` keeps them out of the
    pool and `crowd.review` bans. ``golden_ban_confidence`` > 0 (a confidence bound
    on the golden accuracy, which Toloka cannot express) is always Quorum's, and keeps
    the golden rule out of the pool. Either way `crowd.review` rejects suites answered
    too fast and the suites of banned workers.

    The classifier's score of an item (``sds`` only): ``classifier="prior"`` takes it as
    the item's prior in place of the crowd's base rate, ``"annotator"`` as one more
    annotator with a confusion matrix of its own, ``"off"`` ignores it.

    Control tasks: ``golden_per_worker`` > 0 puts that many control tasks in a pool
    (each worker answers each at most once, so at most that many per worker, in their
    first suites) instead of sizing them by the number of items; 0 keeps the old sizing.

    Per-worker control tasks: ``golden_schedule`` = ``[[from, to, frequency], ...]``
    becomes the pool's ``golden_task_distribution_function`` (Toloka's mixer): a worker
    who has completed between ``from`` and ``to`` tasks (in the project, the default
    ``golden_schedule_scope``, over ``golden_schedule_window_days``) gets a control task at
    every ``frequency``-th task; past the last interval, none. So a worker new to the
    project is checked at once and often, a well-known one rarely or never — the control
    tasks go where they buy information. Empty: a control task in every suite
    (``golden_per_suite``), as before.

    Tempered confidence (``sds`` only): ``temper_min_gold`` > 0 checks the posterior on
    the control tasks — each judged from its first 1, 2, … answers with its own gold left
    out — and, once at least that many control tasks have answers, divides every item's
    log-posterior by the temperature (≥ 1: never sharper) and adds the per-class bias that
    fit their gold best, so a model that states 0.99 where the gold says 0.7 buys more
    answers instead of stopping. 0: off. ``lone_answers`` (``sds``): items with a single
    answer count in the worker matrices too (the full likelihood; with calibrated stopping
    the items with several answers are a biased sample). Best with tempering on.
    """

    overlap: int = 2
    min_answers: int = 2
    max_overlap: int = 5
    target_confidence: float = 0.8
    tasks_per_suite: int = 10
    golden_per_suite: int = 1
    reward_per_task: float = 0.01
    assignment_time_limit_s: int = 600
    auto_accept: bool = False
    auto_accept_period_days: int = 1
    golden_min_answers: int = 3
    golden_min_accuracy: float = 0.6
    golden_ban_confidence: float = 0.0
    quality_control: str = "quorum"
    fast_seconds_per_task: float = 3.0
    fast_max_count: int = 2
    skipped_in_row: int = 3
    ban_days: int = 10
    training: bool = False
    training_pass_mark: int = 70
    training_tasks_per_suite: int = 5
    aggregation: str = "ds"
    may_contain_adult_content: bool = True
    pool_lifetime_days: int = 30
    classifier: str = "prior"
    golden_per_worker: int = 0
    golden_schedule: tuple[tuple[int, int, int], ...] = ()
    golden_schedule_scope: str = "PROJECT"
    golden_schedule_window_days: int = 365
    temper_min_gold: int = 0
    lone_answers: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.overlap <= self.max_overlap:
            raise ValueError("need 1 <= overlap <= max_overlap")
        if self.min_answers > self.max_overlap:
            raise ValueError("min_answers cannot exceed max_overlap")
        if not 0.0 <= self.golden_ban_confidence < 1.0:
            raise ValueError("golden_ban_confidence is a probability under 1")
        if self.quality_control not in ("toloka", "quorum"):
            raise ValueError("quality_control is 'toloka' or 'quorum'")
        if not 0.0 <= self.target_confidence <= 1.0:
            raise ValueError("target_confidence is a probability")
        if self.classifier not in ("off", "prior", "annotator"):
            raise ValueError("classifier is one of off, prior, annotator")
        if self.golden_per_worker < 0:
            raise ValueError("golden_per_worker is a count >= 0")
        schedule = tuple(tuple(int(v) for v in row) for row in self.golden_schedule)
        if any(len(row) != 3 or not 0 <= row[0] <= row[1] or row[2] < 1 for row in schedule):
            raise ValueError("golden_schedule is a list of [from, to, frequency] with "
                             "0 <= from <= to and frequency >= 1")
        object.__setattr__(self, "golden_schedule", schedule)
        if self.golden_schedule_scope not in ("PROJECT", "POOL"):
            raise ValueError("golden_schedule_scope is PROJECT or POOL")
        if not 1 <= self.golden_schedule_window_days <= 365:
            raise ValueError("golden_schedule_window_days is between 1 and 365")
        if not 0 <= self.temper_min_gold <= 100_000:
            raise ValueError("temper_min_gold is a count of control tasks, 0 (off) or more")
        if self.reward_per_suite < 0.005:
            raise ValueError("Toloka pays at least $0.005 per suite")

    @property
    def reward_per_suite(self) -> float:
        return round(self.reward_per_task * (self.tasks_per_suite + self.golden_per_suite), 4)

    @property
    def toloka_bans_golden(self) -> bool:
        """Whether the golden-accuracy ban is a rule of the Toloka pool (else Quorum's)."""
        return self.quality_control == "toloka" and self.golden_ban_confidence <= 0

    @property
    def toloka_bans_fast(self) -> bool:
        return self.quality_control == "toloka"

    @property
    def fast_suite_seconds(self) -> int:
        """The fast-submit threshold of a full suite (control tasks included)."""
        return round(self.fast_seconds_per_task * (self.tasks_per_suite + self.golden_per_suite))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Self:
        """From settings/YAML; unknown keys are an error, not silently ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown crowd settings: {sorted(unknown)}")
        return cls(**dict(data))
