"""End to end: push → crowd works → rounds of pull → review → aggregate → decide / ask more.

Each round is `crowd.rounds.play_round`, the very code the backend's crowd job runs
(``backend.crowdwork.service.pull_pool``, with its book in the database): items
decided in a round stay decided, items without agreement at ``max_overlap`` (or when
the crowd stops answering) go to people. ``wait(pool_id)`` is how the caller lets the
crowd work: `Emulator.work` offline, `wait_until_closed` on real Toloka.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import toloka.client as tc

from crowd.aggregation import RESULT_COLUMNS
from crowd.push import PushPlan, PushResult, push
from crowd.rounds import (
    STOP_CROWD,
    STOP_DONE,
    STOP_ROUNDS,
    MemoryBook,
    RoundState,
    play_round,
    scores_frame,
)
from crowd.store import Store
from crowd.toloka import output_field

ROUND_COLUMNS = [
    "round",
    "new_answers",
    "answers",
    "decided",
    "to_people",
    "items_asked_more",
    "rejected",
    "banned",
]
VERDICT_COLUMNS = [*RESULT_COLUMNS, "reason"]


@dataclass(frozen=True)
class FlowResult:
    """``verdicts``: one row per real item (`VERDICT_COLUMNS`): ``status`` ``decided``
    (frozen in the round it was decided), ``to_people`` (``reason`` says why; ``label``
    is the crowd's best guess or None) or ``needs_more`` (still waiting: the flow was
    stopped by ``max_rounds``). ``answers``: every pulled answer (``assignment_status``
    updated by review). ``valid``: the answers aggregation used (not rejected, no
    banned worker). ``rounds``: one row per round (`ROUND_COLUMNS`). ``stopped``:
    ``done`` (every item resolved), ``crowd stopped`` (nothing new and nothing asked while
    the pool stays open) or ``max rounds``; ``waiting``: items still open (then a warning
    says so too)."""

    push: PushResult
    verdicts: pd.DataFrame
    answers: pd.DataFrame
    valid: pd.DataFrame
    rounds: pd.DataFrame
    banned: list[str]
    stopped: str = STOP_DONE
    waiting: int = 0


def wait_until_closed(
    client: tc.TolokaClient, pool_id: str, *, poll_s: float = 60.0, timeout_s: float = 24 * 3600
) -> None:
    """Real Toloka: block until the pool closes (Toloka closes a pool when its tasks are done)."""
    deadline = time.monotonic() + timeout_s
    while client.get_pool(pool_id).is_open():
        if time.monotonic() > deadline:
            raise TimeoutError(f"pool {pool_id} still open after {timeout_s} s")
        time.sleep(poll_s)


def plan_gold(plan: PushPlan) -> pd.Series | None:
    """The plan's control tasks' known labels (``item_id → label``), None without any."""
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
    max_rounds: int | None = None,
    check: bool = True,
    context: pd.DataFrame | None = None,
) -> FlowResult:
    """Rounds until every item is decided or gone to people, or the crowd stops answering.

    ``check``: review assignments (accept/reject, bans) every round; otherwise all
    pulled answers count. ``max_rounds`` (None: no limit) stops early: the result says
    how many items are still waiting (and a warning does). The pull cursor is kept in
    ``store`` under ``"flow:<key>"``. ``context``: earlier pools' valid answers, so that
    worker skill carries over (`crowd.rounds.decide`). A ``scores`` column in
    ``plan.items`` (``{label: probability}``, the classifier's calibrated score; never
    shown to workers) is the items' prior (`crowd.config.CrowdConfig.classifier`).
    """
    cfg = plan.config
    result = push(client, plan=plan, store=store)
    real = [str(i) for i in plan.items["item_id"]]
    flow_key = f"flow:{plan.key}"
    state = RoundState(
        pool_id=result.pool_id,
        project_id=result.project_id,
        field=output_field(plan.kind),
        config=cfg,
        method=method or cfg.aggregation,
        gold=plan_gold(plan),
        open_items=set(real),
        toloka_tasks=dict(result.task_ids),
        cursor=(store.get(flow_key) or {}).get("cursor"),
        check=check,
        context=context,
        scores=(scores_frame(dict(zip(real, plan.items["scores"], strict=True)))
                if "scores" in plan.items else None),
    )
    book = MemoryBook(real)
    rounds: list[dict] = []
    stopped, last = STOP_DONE, None
    round_no = 0
    while state.open_items:
        if max_rounds is not None and round_no >= max_rounds:
            stopped = STOP_ROUNDS
            break
        round_no += 1
        wait(result.pool_id)
        last = play_round(client, state=state, book=book)
        store.put(flow_key, {"cursor": state.cursor})
        rounds.append(
            {
                "round": round_no,
                "new_answers": last.new_answers,
                "answers": last.answers,
                "decided": len(last.outcome.decided),
                "to_people": len(last.outcome.to_people),
                "items_asked_more": last.asked_more,
                "rejected": last.rejected,
                "banned": len(state.banned),
            }
        )
        if state.open_items and not last.asked_more and not last.rejected and not last.new_answers:
            stopped = STOP_CROWD  # nothing new, nothing asked: another round would spin
            break
    waiting = sorted(state.open_items)
    if waiting:
        why = f"max_rounds={max_rounds}" if stopped == STOP_ROUNDS else "the crowd stopped"
        warnings.warn(
            f"run_flow stopped after {round_no} rounds ({why}): {len(waiting)} items still "
            "waiting for answers",
            stacklevel=2,
        )
    final = dict(book.final)
    latest = last.outcome.verdicts.set_index("task") if last is not None else None
    for item in waiting:
        row = (
            latest.loc[item].to_dict()
            if latest is not None and item in latest.index
            else {"label": None, "confidence": 0.0, "n_answers": 0, "method": state.method}
        )
        final[item] = {**row, "task": item, "status": "needs_more"}
    verdicts = pd.DataFrame(
        [{**final[i], "reason": book.reasons.get(i)} for i in real], columns=VERDICT_COLUMNS
    )
    answers = book.answers
    valid = answers[
        (answers["assignment_status"] != "REJECTED") & ~answers["worker"].isin(state.banned)
    ]
    return FlowResult(
        push=result,
        verdicts=verdicts,
        answers=answers,
        valid=valid,
        rounds=pd.DataFrame(rounds, columns=ROUND_COLUMNS),
        banned=sorted(state.banned),
        stopped=stopped,
        waiting=len(waiting),
    )
