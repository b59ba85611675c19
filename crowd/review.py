"""Accept / reject assignments and ban workers the way Toloka requesters do.

A worker is banned (project-scoped user restriction for ``ban_days``) when their
golden-set accuracy is under ``golden_min_accuracy`` with confidence
``golden_ban_confidence`` (the upper bound of its Beta posterior is under it: 1 right of
3 is not enough evidence, 0 of 3 or 2 of 8 is) after at least ``golden_min_answers``
control answers, or after ``fast_max_count`` suites answered
faster than ``fast_seconds_per_task`` per task. SUBMITTED assignments of banned
workers and fast assignments are rejected (Toloka then re-issues their tasks);
the rest are accepted. PATCHes are idempotent: a retried accept of an accepted
assignment is fine.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
import toloka.client as tc
from scipy.stats import beta
from toloka.client.exceptions import ConflictStateApiError
from toloka.client.user_restriction import ProjectUserRestriction

from crowd.config import CrowdConfig


@dataclass(frozen=True)
class ReviewResult:
    """``decisions``: ``assignment_id, worker, verdict`` (ACCEPTED/REJECTED), ``reason``.
    ``workers``: per worker ``golden_answers, golden_accuracy, fast_suites, banned, reason``."""

    decisions: pd.DataFrame
    workers: pd.DataFrame
    banned: list[str]


def accuracy_upper_bound(right: pd.Series, seen: pd.Series, *, confidence: float) -> pd.Series:
    """One-sided upper bound of a worker's accuracy at ``confidence`` from ``right`` of
    ``seen`` golden answers (the Beta(right + 1, wrong + 1) posterior's quantile); with
    ``confidence`` 0 the point estimate ``right / seen`` (the old rule)."""
    if confidence <= 0:
        return (right / seen.where(seen > 0)).astype(float)
    upper = beta.ppf(confidence, right + 1, seen - right + 1)
    return pd.Series(upper, index=right.index).where(seen > 0)


def worker_quality(answers: pd.DataFrame, *, config: CrowdConfig) -> pd.DataFrame:
    """Per-worker golden accuracy and fast-suite counts from an answers frame (`crowd.pull`)."""
    golden = answers[answers["is_golden"].astype(bool)]
    acc = (
        (golden["label"] == golden["golden_label"]).groupby(golden["worker"]).agg(["size", "mean"])
    )
    per_suite = answers.groupby("assignment_id").agg(
        worker=("worker", "first"), spent=("time_spent_s", "median")
    )
    fast = (per_suite["spent"] < config.fast_seconds_per_task).groupby(per_suite["worker"]).sum()
    out = pd.DataFrame(index=pd.Index(sorted(answers["worker"].unique()), name="worker"))
    out["golden_answers"] = acc["size"].reindex(out.index).fillna(0).astype(int)
    out["golden_accuracy"] = acc["mean"].reindex(out.index)
    out["fast_suites"] = fast.reindex(out.index).fillna(0).astype(int)
    right = (out["golden_accuracy"].fillna(0) * out["golden_answers"]).round()
    out["golden_accuracy_upper"] = accuracy_upper_bound(
        right, out["golden_answers"], confidence=config.golden_ban_confidence
    )
    low = (out["golden_answers"] >= config.golden_min_answers) & (
        out["golden_accuracy_upper"] < config.golden_min_accuracy
    )
    too_fast = out["fast_suites"] >= config.fast_max_count
    out["banned"] = low | too_fast
    out["reason"] = None
    out.loc[too_fast, "reason"] = "fast answers"
    out.loc[low, "reason"] = "golden accuracy"
    return out.reset_index()


def _set_status(client: tc.TolokaClient, assignment_id: str, verdict: str, comment: str) -> None:
    try:
        if verdict == "ACCEPTED":
            client.accept_assignment(assignment_id, public_comment=comment)
        else:
            client.reject_assignment(assignment_id, public_comment=comment)
    except ConflictStateApiError:
        current = client.get_assignment(assignment_id)
        if str(getattr(current.status, "value", current.status)) != verdict:
            raise


def review(
    client: tc.TolokaClient,
    *,
    answers: pd.DataFrame,
    project_id: str,
    config: CrowdConfig,
    already_banned: frozenset[str] = frozenset(),
    now: dt.datetime | None = None,
) -> ReviewResult:
    """Ban spammers and accept/reject the SUBMITTED assignments found in ``answers``.

    ``answers`` should hold everything pulled so far (history makes the golden rate);
    only rows with ``assignment_status == "SUBMITTED"`` are decided.
    """
    now = now or dt.datetime.now(dt.UTC)
    workers = worker_quality(answers, config=config)
    banned = [w for w in workers.loc[workers["banned"], "worker"] if w not in already_banned]
    reasons = dict(zip(workers["worker"], workers["reason"], strict=True))
    for worker in banned:
        client.set_user_restriction(
            ProjectUserRestriction(
                user_id=worker,
                project_id=project_id,
                private_comment=f"quorum: {reasons[worker]}",
                will_expire=now + dt.timedelta(days=config.ban_days),
            )
        )
    submitted = answers[answers["assignment_status"] == "SUBMITTED"]
    per_suite = submitted.groupby("assignment_id").agg(
        worker=("worker", "first"), spent=("time_spent_s", "median")
    )
    rows = []
    banned_all = set(banned) | set(already_banned)
    for assignment_id, row in per_suite.sort_index().iterrows():
        if row["worker"] in banned_all:
            verdict, reason = "REJECTED", reasons.get(row["worker"]) or "banned"
        elif row["spent"] < config.fast_seconds_per_task:
            verdict, reason = "REJECTED", "fast answers"
        else:
            verdict, reason = "ACCEPTED", ""
        if not config.auto_accept:
            _set_status(
                client,
                str(assignment_id),
                verdict,
                "Thank you!" if verdict == "ACCEPTED" else f"Rejected: {reason}",
            )
        rows.append(
            {
                "assignment_id": assignment_id,
                "worker": row["worker"],
                "verdict": verdict,
                "reason": reason,
            }
        )
    decisions = pd.DataFrame(rows, columns=["assignment_id", "worker", "verdict", "reason"])
    return ReviewResult(decisions=decisions, workers=workers, banned=banned)
