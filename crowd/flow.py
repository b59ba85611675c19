"""End to end: push → crowd works → pull → review → aggregate → dynamic-overlap rounds.

This is the composition the backend's crowd job runs and the tests and benches
exercise against the emulator. ``wait(pool_id)`` is how the caller lets the crowd
work: `Emulator.work` offline, `wait_until_closed` on real Toloka.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import toloka.client as tc

from crowd.aggregation import aggregate
from crowd.overlap import next_round
from crowd.pull import empty_answers, merge_answers, pull
from crowd.push import PushPlan, PushResult, push
from crowd.review import review
from crowd.store import Store
from crowd.toloka import output_field

ROUND_COLUMNS = ["round", "new_answers", "answers", "items_asked_more", "rejected", "banned"]


@dataclass(frozen=True)
class FlowResult:
    """``verdicts``: `crowd.aggregation.aggregate` rows for the real items (control
    tasks removed). ``answers``: every pulled answer (``assignment_status`` updated by
    review). ``valid``: the answers aggregation used (not rejected, no banned worker).
    ``rounds``: one row per round (`ROUND_COLUMNS`)."""

    push: PushResult
    verdicts: pd.DataFrame
    answers: pd.DataFrame
    valid: pd.DataFrame
    rounds: pd.DataFrame
    banned: list[str]


def wait_until_closed(
    client: tc.TolokaClient, pool_id: str, *, poll_s: float = 60.0, timeout_s: float = 24 * 3600
) -> None:
    """Real Toloka: block until the pool closes (Toloka closes a pool when its tasks are done)."""
    deadline = time.monotonic() + timeout_s
    while client.get_pool(pool_id).is_open():
        if time.monotonic() > deadline:
            raise TimeoutError(f"pool {pool_id} still open after {timeout_s} s")
        time.sleep(poll_s)


def _gold(plan: PushPlan) -> pd.Series | None:
    if plan.golden is None or not len(plan.golden):
        return None
    return pd.Series(
        plan.golden["label"].astype(str).to_numpy(), index=plan.golden["item_id"].astype(str)
    )


def run_flow(
    client: tc.TolokaClient,
    *,
    plan: PushPlan,
    store: Store,
    wait: Callable[[str], object],
    method: str | None = None,
    max_rounds: int = 6,
    check: bool = True,
) -> FlowResult:
    """Run rounds until every item is decided or at ``max_overlap``, or the crowd stops answering.

    ``check``: review assignments (accept/reject, bans) every round; otherwise all
    pulled answers count. The pull cursor is kept in ``store`` under ``"flow:<key>"``.
    """
    cfg = plan.config
    method = method or cfg.aggregation
    result = push(client, plan=plan, store=store)
    pool_id, field = result.pool_id, output_field(plan.kind)
    gold = _gold(plan)
    flow_key = f"flow:{plan.key}"
    cursor = (store.get(flow_key) or {}).get("cursor")
    answers, banned = empty_answers(), set()
    valid = answers
    rounds = []
    for round_no in range(1, max_rounds + 1):
        wait(pool_id)
        got = pull(client, pool_id=pool_id, cursor=cursor, field=field)
        cursor = got.cursor
        store.put(flow_key, {"cursor": cursor})
        answers = merge_answers(answers, got.answers)
        rejected = 0
        if check and len(answers):
            verdict = review(
                client,
                answers=answers,
                project_id=result.project_id,
                config=cfg,
                already_banned=frozenset(banned),
            )
            banned |= set(verdict.banned)
            decided = verdict.decisions.set_index("assignment_id")["verdict"]
            hit = answers["assignment_id"].isin(decided.index)
            answers.loc[hit, "assignment_status"] = answers.loc[hit, "assignment_id"].map(decided)
            rejected = int((decided == "REJECTED").sum())
        valid = answers[
            (answers["assignment_status"] != "REJECTED") & ~answers["worker"].isin(banned)
        ]
        more = next_round(valid, config=cfg, method=method, gold=gold) if len(valid) else valid
        rounds.append(
            {
                "round": round_no,
                "new_answers": len(got.answers),
                "answers": len(answers),
                "items_asked_more": len(more),
                "rejected": rejected,
                "banned": len(banned),
            }
        )
        if (more.empty and not rejected) or got.answers.empty:
            break
        issued = answers[answers["assignment_status"] != "REJECTED"].groupby("task").size()
        for row in more.itertuples():
            task_id = result.task_ids[str(row.task)]
            client.patch_task_overlap_or_min(
                task_id, overlap=int(issued.get(row.task, 0) + row.need)
            )
        client.open_pool(pool_id)
    verdicts = (
        aggregate(
            valid,
            method=method,
            gold=gold,
            target_confidence=cfg.target_confidence,
            min_answers=cfg.min_answers,
        )
        if len(valid)
        else aggregate(valid)
    )
    real = set(plan.items["item_id"].astype(str))
    verdicts = verdicts[verdicts["task"].isin(real)].reset_index(drop=True)
    return FlowResult(
        push=result,
        verdicts=verdicts,
        answers=answers,
        valid=valid,
        rounds=pd.DataFrame(rounds, columns=ROUND_COLUMNS),
        banned=sorted(banned),
    )
