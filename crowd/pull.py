"""Incremental, idempotent pull of crowd answers.

Assignments are read sorted by id after a cursor (``id_gt``), page by page
(``has_more``). The returned cursor never moves past an assignment that is still
ACTIVE (being worked on) — probed before and after the pages are read — so answers
submitted later with a lower id are not skipped; re-reading is harmless because answers are keyed by
``(assignment_id, task)`` (`merge_answers`). HTTP retries are toloka-kit's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import toloka.client as tc

ANSWER_COLUMNS = [
    "task",
    "worker",
    "label",
    "assignment_id",
    "assignment_status",
    "time_spent_s",
    "is_golden",
    "golden_label",
    "submitted_at",
    "pool_id",
    "task_id",
    "reward",
]


@dataclass(frozen=True)
class PullResult:
    """``answers``: one row per answered task. Columns: ``task`` (our item id),
    ``worker``, ``label``, ``assignment_id``, ``assignment_status``, ``time_spent_s``
    (suite time / tasks in it), ``is_golden``, ``golden_label`` (None unless golden),
    ``submitted_at`` (UTC), ``pool_id``, ``task_id`` (Toloka's), ``reward`` (of the
    whole assignment, repeated on its rows)."""

    answers: pd.DataFrame
    cursor: str | None
    n_assignments: int


def empty_answers() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in ANSWER_COLUMNS})


def _rows(assignment: tc.Assignment, field: str) -> list[dict]:
    submitted = assignment.submitted or assignment.created
    spent = (submitted - assignment.created).total_seconds() if assignment.created else float("nan")
    n = max(len(assignment.tasks), 1)
    rows = []
    for task, solution in zip(assignment.tasks, assignment.solutions or [], strict=False):
        known = task.known_solutions or []
        rows.append(
            {
                "task": str(task.input_values["item_id"]),
                "worker": assignment.user_id,
                "label": solution.output_values.get(field),
                "assignment_id": assignment.id,
                "assignment_status": str(
                    assignment.status.value
                    if hasattr(assignment.status, "value")
                    else assignment.status
                ),
                "time_spent_s": spent / n,
                "is_golden": bool(known),
                "golden_label": known[0].output_values.get(field) if known else None,
                "submitted_at": submitted.astimezone(dt.UTC) if submitted else None,
                "pool_id": assignment.pool_id,
                "task_id": task.id,
                "reward": float(assignment.reward or 0),
            }
        )
    return rows


def pull(
    client: tc.TolokaClient,
    *,
    pool_id: str,
    cursor: str | None = None,
    field: str = "label",
    statuses: Sequence[str] = ("SUBMITTED", "ACCEPTED"),
    batch_size: int = 1000,
) -> PullResult:
    """Answers of assignments in ``pool_id`` with id > ``cursor``, and the next cursor.

    The lowest ACTIVE assignment is looked up before the pages are read and again after
    (a suite ACTIVE during the paging may be submitted before a probe made only at the
    end, and would be skipped for good); the cursor stays below the lower of the two."""

    def lowest_active() -> str | None:
        found = client.find_assignments(
            pool_id=pool_id, status=["ACTIVE"], sort=["id"], limit=1
        ).items
        return found[0].id if found else None

    rows: list[dict] = []
    before = lowest_active()
    last = cursor
    seen = 0
    while True:
        request: dict = {"pool_id": pool_id, "status": list(statuses)}
        if last is not None:
            request["id_gt"] = last
        page = client.find_assignments(**request, sort=["id"], limit=batch_size)
        for assignment in page.items:
            rows.extend(_rows(assignment, field))
            last = assignment.id
            seen += 1
        if not page.has_more or not page.items:
            break
    active = [a for a in (before, lowest_active()) if a is not None]
    next_cursor = last
    if active and last is not None and min(active) <= last:
        below = [r["assignment_id"] for r in rows if r["assignment_id"] < min(active)]
        next_cursor = max(below) if below else cursor
    answers = pd.DataFrame(rows, columns=ANSWER_COLUMNS) if rows else empty_answers()
    answers = answers.drop_duplicates(["assignment_id", "task"], keep="last").reset_index(drop=True)
    return PullResult(answers=answers, cursor=next_cursor, n_assignments=seen)


def merge_answers(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Union of two answer frames keyed by ``(assignment_id, task)``; newer rows win."""
    frames = [f for f in (old, new) if len(f)]
    if not frames:
        return empty_answers()
    merged = pd.concat(frames, ignore_index=True)
    return merged.drop_duplicates(["assignment_id", "task"], keep="last").reset_index(drop=True)
