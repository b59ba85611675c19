"""Accept / reject assignments and ban workers the way Toloka requesters do.

Who bans depends on ``CrowdConfig.quality_control``. With ``"toloka"`` the pool carries
the golden-accuracy and fast-answer rules (`crowd.toloka.build_pool`) and Toloka puts
the restrictions itself; review only **reads** them (``get_user_restrictions`` of the
project: Toloka's rules, a requester's manual bans and Quorum's own alike) and treats
those workers as banned — it never bans them again. Quorum's own ban there is only the
opt-in confidence bound (``golden_ban_confidence`` > 0, which Toloka cannot express and
which keeps the golden rule out of the pool). With ``"quorum"`` (the default) the pool
carries neither rule and review bans as follows.

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
from crowd.toloka import SKIPPED_COMMENT


@dataclass(frozen=True)
class ReviewResult:
    """``decisions``: ``assignment_id, worker, verdict`` (ACCEPTED/REJECTED), ``reason``.
    ``workers``: per worker ``golden_answers, golden_accuracy, fast_suites, banned, reason,
    banned_by`` (``quorum``: review put the restriction; ``toloka``: found on Toloka).
    ``banned``: workers newly known as banned (either way)."""

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


def toloka_restricted(client: tc.TolokaClient, *, project_id: str) -> dict[str, str]:
    """Workers under a user restriction on ``project_id`` (or all projects) now, with its
    comment: what Toloka's pool rules (or anyone) decided. The skipped-suites pause is
    left out: it says nothing of the worker's answers."""
    out: dict[str, str] = {}
    for request in ({"project_id": project_id}, {"scope": "ALL_PROJECTS"}):
        for r in client.get_user_restrictions(**request):
            if r.private_comment != SKIPPED_COMMENT:
                out.setdefault(str(r.user_id), r.private_comment or "restricted on Toloka")
    return out


def worker_quality(
    answers: pd.DataFrame,
    *,
    config: CrowdConfig,
    restricted: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Per-worker golden accuracy and fast-suite counts from an answers frame (`crowd.pull`).

    ``banned`` / ``reason``: the rules Quorum enforces under ``config.quality_control``,
    plus ``restricted`` (worker → comment: Toloka's restrictions, `toloka_restricted`)."""
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
    if config.toloka_bans_golden:
        low &= False
    too_fast = out["fast_suites"] >= config.fast_max_count
    if config.toloka_bans_fast:
        too_fast &= False
    by_toloka = pd.Series(out.index.isin(list(restricted or {})), index=out.index)
    out["banned"] = low | too_fast | by_toloka
    out["reason"] = None
    out.loc[too_fast, "reason"] = "fast answers"
    out.loc[low, "reason"] = "golden accuracy"
    for worker in out.index[by_toloka & ~(low | too_fast)]:
        out.loc[worker, "reason"] = f"toloka: {(restricted or {})[worker]}"
    out["banned_by"] = None
    out.loc[low | too_fast, "banned_by"] = "quorum"
    out.loc[by_toloka & ~(low | too_fast), "banned_by"] = "toloka"
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
    restricted = (
        toloka_restricted(client, project_id=project_id)
        if config.quality_control == "toloka"
        else None
    )
    workers = worker_quality(answers, config=config, restricted=restricted)
    banned = [w for w in workers.loc[workers["banned"], "worker"] if w not in already_banned]
    reasons = dict(zip(workers["worker"], workers["reason"], strict=True))
    ours = set(workers.loc[workers["banned_by"] == "quorum", "worker"])
    for worker in (w for w in banned if w in ours):  # Toloka's own bans are not repeated
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
