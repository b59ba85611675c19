"""Toloka's pool quality control, evaluated the way Toloka does (`Realism.quality_control`).

After each suite a worker submits or skips, every ``quality_control.configs`` entry of
the pool whose collector is emulated recomputes that worker's statistic; a rule whose
conditions all hold puts its ``RESTRICTION_V2`` / ``RESTRICTION`` (scope, duration) on
the worker. Emulated collectors: ``GOLDEN_SET``, ``ASSIGNMENT_SUBMIT_TIME``,
``SKIPPED_IN_ROW_ASSIGNMENTS``; others are recorded, not evaluated.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable
from dataclasses import dataclass, field

from crowd.emulator.state import TolokaState, iso

_OPS: dict[str, Callable[[float, float], bool]] = {
    "EQ": operator.eq,
    "NE": operator.ne,
    "GT": operator.gt,
    "GTE": operator.ge,
    "LT": operator.lt,
    "LTE": operator.le,
}
_UNITS = {"MINUTES": 60, "HOURS": 3600, "DAYS": 86400, "PERMANENT": None}


@dataclass
class _History:
    golden: list[bool] = field(default_factory=list)  # right / wrong, in submission order
    seconds: list[float] = field(default_factory=list)  # suite durations
    skipped_in_row: int = 0


class QualityControl:
    """Per (pool, worker) histories and the restrictions the pool's rules put."""

    def __init__(self, state: TolokaState) -> None:
        self.state = state
        self.history: dict[tuple[str, str], _History] = {}
        #: (pool, worker, private_comment) of each restriction a rule put, in order.
        self.fired: list[tuple[str, str, str]] = []

    def on_submit(
        self, pool: dict, worker: str, *, golden: list[bool], seconds: float
    ) -> None:
        h = self.history.setdefault((pool["id"], worker), _History())
        h.golden.extend(golden)
        h.seconds.append(seconds)
        h.skipped_in_row = 0
        self._evaluate(pool, worker, h)

    def on_skip(self, pool: dict, worker: str) -> None:
        h = self.history.setdefault((pool["id"], worker), _History())
        h.skipped_in_row += 1
        self._evaluate(pool, worker, h)

    def _stats(self, collector: dict, h: _History) -> dict[str, float] | None:
        kind = collector.get("type")
        params = collector.get("parameters") or {}
        size = int(params.get("history_size") or 0)
        if kind == "GOLDEN_SET":
            seen = h.golden[-size:] if size else h.golden
            n = len(seen)
            right = sum(seen)
            return {
                "golden_set_answers_count": n,
                "golden_set_correct_answers_rate": 100.0 * right / n if n else float("nan"),
                "golden_set_incorrect_answers_rate": 100.0 * (n - right) / n if n else float("nan"),
            }
        if kind == "ASSIGNMENT_SUBMIT_TIME":
            seen_s = h.seconds[-size:] if size else h.seconds
            threshold = float(params.get("fast_submit_threshold_seconds") or 0)
            return {
                "total_submitted_count": len(seen_s),
                "fast_submitted_count": sum(1 for s in seen_s if s < threshold),
            }
        if kind == "SKIPPED_IN_ROW_ASSIGNMENTS":
            return {"skipped_in_row_count": h.skipped_in_row}
        return None

    def _evaluate(self, pool: dict, worker: str, h: _History) -> None:
        for config in (pool.get("quality_control") or {}).get("configs") or []:
            stats = self._stats(config.get("collector_config") or {}, h)
            if stats is None:
                continue
            for rule in config.get("rules") or []:
                conds = rule.get("conditions") or []
                if conds and all(self._holds(c, stats) for c in conds):
                    self._act(pool, worker, rule.get("action") or {})

    @staticmethod
    def _holds(cond: dict, stats: dict[str, float]) -> bool:
        value = stats.get(str(cond.get("key")))
        op = _OPS.get(str(cond.get("operator")))
        if value is None or op is None or value != value:  # unknown key, or NaN: no data
            return False
        return op(float(value), float(cond["value"]))

    def _act(self, pool: dict, worker: str, action: dict) -> None:
        if action.get("type") not in ("RESTRICTION_V2", "RESTRICTION"):
            return
        p = action.get("parameters") or {}
        scope = p.get("scope", "PROJECT")
        body: dict = {"scope": scope, "user_id": worker,
                      "private_comment": p.get("private_comment", "")}
        if scope == "PROJECT":
            body["project_id"] = pool["project_id"]
        elif scope == "POOL":
            body["pool_id"] = pool["id"]
        unit = _UNITS.get(str(p.get("duration_unit", "DAYS")), 86400)
        if p.get("duration") is not None and unit is not None:
            until = self.state.now + dt.timedelta(seconds=int(p["duration"]) * unit)
            body["will_expire"] = iso(until)
        if not self.state.is_restricted(worker, pool):
            self.state.put_restriction(body)
            self.fired.append((pool["id"], worker, body["private_comment"]))
