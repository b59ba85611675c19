"""One round of a crowd pool: pull → review → aggregate → decide / escalate / ask for more.

This is the single composition both callers run: the library's `crowd.flow.run_flow`
(benches, ``quorum crowd replay``) keeps its book in memory (`MemoryBook`), the
backend's crowd job (``backend.crowdwork.service.pull_pool``) keeps it in the database.
A `RoundBook` is where the answers and the outcomes are made durable; everything
else — what is decided, what goes to people, who gets another answer — is decided
here, once:

* an item decided in an earlier round is **frozen**: it is no longer in ``open_items``,
  later answers and re-estimated worker skills never reopen it;
* an open item whose aggregate is ``decided`` is decided now;
* an open item at ``max_overlap`` without agreement (a tie, or confidence under the
  target), or still unsure when the crowd stopped answering (the pool closed and the
  round brought nothing), goes **to people** with the reason;
* every other open item gets ``max(min_answers − n, 1)`` more answers (capped at
  ``max_overlap − n``).

The aggregate is computed once per round (over every valid answer, control tasks
included, so that worker estimates use them).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd
import toloka.client as tc

from crowd.aggregation import aggregate
from crowd.config import CrowdConfig
from crowd.overlap import NEXT_COLUMNS
from crowd.pull import empty_answers, merge_answers, pull
from crowd.review import review

STOP_DONE, STOP_CROWD, STOP_ROUNDS = "done", "crowd stopped", "max rounds"


@dataclass(frozen=True)
class Outcome:
    """What a round decided about the open items (item keys are strings).

    ``verdicts``: the round's aggregate (`crowd.aggregation.RESULT_COLUMNS`) for every
    answered task; ``decided``: its rows for the open items decided now; ``to_people``:
    open item → why it goes to moderators; ``more``: `crowd.overlap.NEXT_COLUMNS` rows
    for the open items that get more answers; ``exhausted``: the crowd stopped answering.
    """

    verdicts: pd.DataFrame
    decided: pd.DataFrame
    to_people: dict[str, str]
    more: pd.DataFrame
    exhausted: bool
    #: the temperature the posterior was divided by (``CrowdConfig.temper_min_gold``)
    temperature: float = 1.0
    #: label → the bias added to the tempered log-posterior (empty: not tempered)
    class_bias: Mapping[str, float] = field(default_factory=dict)


def decide(
    valid: pd.DataFrame,
    *,
    config: CrowdConfig,
    method: str,
    gold: pd.Series | None,
    open_items: Collection[str],
    exhausted: bool,
    context: pd.DataFrame | None = None,
    scores: pd.DataFrame | None = None,
) -> Outcome:
    """Decide the open items from ``valid`` answers (``task, worker, label``; rejected
    assignments and banned workers already removed). See the module docstring.

    ``context``: valid answers from earlier pools (same columns, optionally ``is_golden``
    and ``golden_label``): aggregated with this pool's so that what is known of each
    worker carries over (their control answers join ``gold``); their items are never
    open here, so nothing of theirs is decided again."""
    open_set = {str(i) for i in open_items}
    data = valid
    if context is not None and len(context):
        cols = ["task", "worker", "label"]
        data = pd.concat([valid[cols], context[cols]], ignore_index=True)
        if "is_golden" in context:
            known = context[context["is_golden"].astype(bool)].drop_duplicates("task")
            extra = pd.Series(known["golden_label"].astype(str).to_numpy(),
                              index=known["task"].astype(str).to_numpy())
            gold = extra if gold is None else pd.concat(
                [gold, extra[~extra.index.isin(gold.index)]])
    verdicts = (
        aggregate(
            data,
            method=method,
            gold=gold,
            target_confidence=config.target_confidence,
            min_answers=config.min_answers,
            prior=scores if config.classifier == "prior" else None,
            classifier=scores if config.classifier == "annotator" else None,
            temper_min_gold=config.temper_min_gold,
            lone_answers=config.lone_answers,
        )
        if len(data)
        else aggregate(data)
    )
    mine = verdicts[verdicts["task"].isin(open_set)]
    decided = mine[mine["status"] == "decided"].reset_index(drop=True)
    unsure = mine[mine["status"] != "decided"]
    n = unsure["n_answers"].astype(int)
    capped = (n >= config.max_overlap).to_numpy()
    to_people: dict[str, str] = {}
    for row, at_cap in zip(unsure.itertuples(), capped, strict=True):
        why = "tie" if row.label is None else f"confidence {float(row.confidence):.2f}"
        if at_cap:
            to_people[str(row.task)] = f"no agreement at {int(row.n_answers)} answers ({why})"
        elif exhausted:
            to_people[str(row.task)] = f"the crowd stopped answering ({why})"
    if exhausted:
        for item in sorted(open_set - set(mine["task"])):
            to_people[item] = "the crowd gave no usable answer"
    asked = unsure.iloc[0:0] if exhausted else unsure[~capped]
    need = (
        (config.min_answers - asked["n_answers"].astype(int))
        .clip(lower=1)
        .clip(upper=config.max_overlap - asked["n_answers"].astype(int))
    )
    more = pd.DataFrame(
        {
            "task": asked["task"].astype(str),
            "n_answers": asked["n_answers"].astype(int),
            "confidence": asked["confidence"].astype(float),
            "need": need.astype(int),
        }
    )
    more["overlap"] = more["n_answers"] + more["need"]
    return Outcome(
        verdicts=verdicts,
        decided=decided,
        to_people=to_people,
        more=more[NEXT_COLUMNS].reset_index(drop=True),
        exhausted=exhausted,
        temperature=float(verdicts.attrs.get("temperature", 1.0)),
        class_bias=dict(verdicts.attrs.get("class_bias") or {}),
    )


def scores_frame(scores: Mapping[str, Mapping[str, float] | None]) -> pd.DataFrame | None:
    """``item → {label: probability}`` (None or empty: no score) as `decide`'s ``scores``."""
    rows = {str(k): dict(v) for k, v in scores.items() if isinstance(v, Mapping) and v}
    if not rows:
        return None
    return pd.DataFrame.from_dict(rows, orient="index").astype(float)


class RoundBook(Protocol):
    """Where a pool's answers and outcomes live between rounds (memory or a database)."""

    def record(self, answers: pd.DataFrame, cursor: str | None) -> pd.DataFrame:
        """Keep the round's new ``answers`` and the pull ``cursor`` durably; return every
        answer of the pool so far (the review and the aggregate read the whole history)."""
        ...

    def resolve(
        self,
        *,
        outcome: Outcome,
        history: pd.DataFrame,
        statuses: Mapping[str, str],
        banned: Collection[str],
    ) -> set[str]:
        """Keep the review verdicts (``statuses``: assignment → ACCEPTED/REJECTED), the
        bans and the round's outcome durably; return the items still open."""
        ...


@dataclass
class RoundState:
    """What a round starts from: the Toloka pool, the pull cursor, the open items."""

    pool_id: str
    project_id: str
    field: str
    config: CrowdConfig
    method: str
    gold: pd.Series | None
    open_items: set[str]
    toloka_tasks: Mapping[str, str | None]
    cursor: str | None = None
    banned: set[str] = field(default_factory=set)
    check: bool = True
    #: Earlier pools' valid answers (`decide`'s ``context``): worker skill carried over.
    context: pd.DataFrame | None = None
    #: The classifier's probabilities of the items that have one (`decide`'s ``scores``).
    scores: pd.DataFrame | None = None


@dataclass(frozen=True)
class RoundReport:
    new_answers: int
    answers: int
    rejected: int
    banned: list[str]  # banned in this round
    outcome: Outcome
    open_items: set[str]
    asked_more: int
    closed: bool
    history: pd.DataFrame
    valid: pd.DataFrame


def play_round(client: tc.TolokaClient, *, state: RoundState, book: RoundBook) -> RoundReport:
    """One round on ``state.pool_id``; the remote calls after the book's ``resolve`` (ask
    for more, open or close the pool) are safe to repeat."""
    got = pull(client, pool_id=state.pool_id, cursor=state.cursor, field=state.field)
    toloka_closed = not client.get_pool(state.pool_id).is_open()
    history = book.record(got.answers, got.cursor)
    if got.cursor is not None:
        state.cursor = got.cursor
    statuses: dict[str, str] = {}
    new_bans: list[str] = []
    rejected = 0
    if state.check and len(history):
        result = review(
            client,
            answers=history,
            project_id=state.project_id,
            config=state.config,
            already_banned=frozenset(state.banned),
        )
        new_bans = list(result.banned)
        state.banned |= set(new_bans)
        statuses = dict(
            zip(
                result.decisions["assignment_id"].astype(str),
                result.decisions["verdict"],
                strict=True,
            )
        )
        rejected = sum(1 for v in statuses.values() if v == "REJECTED")
        hit = history["assignment_id"].astype(str).isin(list(statuses))
        history.loc[hit, "assignment_status"] = (
            history.loc[hit, "assignment_id"].astype(str).map(statuses)
        )
    valid = history[
        (history["assignment_status"] != "REJECTED") & ~history["worker"].isin(state.banned)
    ]
    exhausted = toloka_closed and got.answers.empty and rejected == 0
    outcome = decide(
        valid,
        config=state.config,
        method=state.method,
        gold=state.gold,
        open_items=state.open_items,
        exhausted=exhausted,
        context=state.context,
        scores=state.scores,
    )
    still = book.resolve(outcome=outcome, history=history, statuses=statuses, banned=state.banned)
    state.open_items = set(still)
    if not still:
        client.close_pool(state.pool_id)
        asked = 0
    else:
        more = outcome.more[outcome.more["task"].isin(still)]
        issued = history[history["assignment_status"] != "REJECTED"].groupby("task").size()
        asked = 0
        for row in more.itertuples():
            task_id = state.toloka_tasks.get(str(row.task))
            if task_id:
                client.patch_task_overlap_or_min(
                    task_id, overlap=int(issued.get(row.task, 0) + row.need)
                )
                asked += 1
        if asked or rejected:
            client.open_pool(state.pool_id)
    return RoundReport(
        new_answers=len(got.answers),
        answers=len(history),
        rejected=rejected,
        banned=sorted(new_bans),
        outcome=outcome,
        open_items=state.open_items,
        asked_more=asked,
        closed=not still,
        history=history,
        valid=valid,
    )


class MemoryBook:
    """A `RoundBook` in memory: the library flow's. ``final``: one verdict row per
    resolved item, frozen when it was resolved (``status`` ``decided`` or ``to_people``)."""

    def __init__(self, open_items: Collection[str]) -> None:
        self.answers = empty_answers()
        self.open_items = {str(i) for i in open_items}
        self.final: dict[str, dict] = {}
        self.reasons: dict[str, str] = {}

    def record(self, answers: pd.DataFrame, cursor: str | None) -> pd.DataFrame:
        self.answers = merge_answers(self.answers, answers)
        return self.answers.copy()

    def resolve(
        self,
        *,
        outcome: Outcome,
        history: pd.DataFrame,
        statuses: Mapping[str, str],
        banned: Collection[str],
    ) -> set[str]:
        if statuses:
            hit = self.answers["assignment_id"].astype(str).isin(list(statuses))
            self.answers.loc[hit, "assignment_status"] = (
                self.answers.loc[hit, "assignment_id"].astype(str).map(statuses)
            )
        for row in outcome.decided.to_dict("records"):
            self.final[str(row["task"])] = row
        by_task = outcome.verdicts.set_index("task")
        for item, why in outcome.to_people.items():
            row = (
                {"task": item, **by_task.loc[item].to_dict()}
                if item in by_task.index
                else {"task": item, "label": None, "confidence": 0.0, "n_answers": 0}
            )
            self.final[item] = {**row, "status": "to_people"}
            self.reasons[item] = why
        self.open_items -= set(self.final)
        return set(self.open_items)
