"""What the emulator does like a real Toloka pool, when asked: `Realism`.

Off by default (``Realism()``): suites are submitted the moment they are taken,
operations are finished when they are answered, no 429s, the pool's quality-control
rules are recorded but not evaluated — the emulator the older tests were written
against. Each knob switches on one thing real pools do:

* ``active`` / ``expired`` / ``skipped``: shares of the suites workers take. A
  *skipped* suite is SKIPPED at once (no solutions; its tasks go back to the pool, never
  to that worker again). An *active* suite stays ACTIVE (taken, nothing submitted) until
  the next `Emulator.work` call, which submits it. An *expired* suite stays ACTIVE, then
  lapses at the next work call (EXPIRED: the worker let ``assignment_max_duration_seconds``
  pass; its tasks go back to the pool and are served again, to other workers). While a
  pool has ACTIVE suites it does not close itself. Drawn from ``(seed, assignment id)``.
* ``pending_polls``: operations (pool open/close, task upload with ``async_mode``,
  aggregation) are answered PENDING and take effect only when finished: the n-th
  ``GET /operations/{id}`` (RUNNING before it) or the next work call finishes them.
  toloka-kit's ``wait_operation`` polls them (1 s between polls: keep n small).
* ``too_many_requests``: share of calls answered ``429`` with Toloka's error body
  (``code: TOO_MANY_REQUESTS``, ``payload.interval: MIN``) and a ``Retry-After`` of
  ``retry_after_s`` seconds, before any work is done (safe to retry). Drawn from
  ``(seed, route, call number)``.
* ``quality_control``: the pool's ``quality_control.configs`` are evaluated as Toloka
  does after each suite: ``GOLDEN_SET`` (``golden_set_correct_answers_rate``,
  ``golden_set_incorrect_answers_rate``, ``golden_set_answers_count`` over the worker's
  last ``history_size`` control answers in the pool), ``ASSIGNMENT_SUBMIT_TIME``
  (``fast_submitted_count``, ``total_submitted_count`` over the last ``history_size``
  suites, fast = under ``fast_submit_threshold_seconds``), ``SKIPPED_IN_ROW_ASSIGNMENTS``
  (``skipped_in_row_count``); the action ``RESTRICTION_V2`` (or ``RESTRICTION``) puts a
  user restriction (scope, duration). Other collectors and actions are recorded only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Realism:
    active: float = 0.0
    expired: float = 0.0
    skipped: float = 0.0
    pending_polls: int = 0
    too_many_requests: float = 0.0
    retry_after_s: int = 0
    quality_control: bool = False

    def __post_init__(self) -> None:
        shares = (self.active, self.expired, self.skipped, self.too_many_requests)
        fates = self.active + self.expired + self.skipped
        if any(not 0.0 <= s < 1.0 for s in shares) or fates >= 1:
            raise ValueError("realism shares are probabilities under 1 (suite fates sum under 1)")
        if self.pending_polls < 0 or self.retry_after_s < 0:
            raise ValueError("pending_polls and retry_after_s are >= 0")

    @property
    def suite_fates(self) -> bool:
        return bool(self.active or self.expired or self.skipped)

    @classmethod
    def real_pool(cls) -> Realism:
        """Everything on, at rates a busy real pool shows (what the new tests use)."""
        return cls(
            active=0.15,
            expired=0.1,
            skipped=0.1,
            pending_polls=2,
            too_many_requests=0.1,
            quality_control=True,
        )
