"""Label aggregation with crowd-kit, chosen by name, with an explicit "needs more" status.

Methods (crowd-kit classes): ``mv`` `MajorityVote`, ``wawa`` `Wawa`, ``ds``
`DawidSkene`, ``glad`` `GLAD`, ``gold_mv`` `GoldMajorityVote`. How gold is used:

* ``ds``: the known labels are passed as ``true_labels``; crowd-kit clamps those
  tasks' posteriors to the truth in every EM step, which anchors worker error matrices.
* ``gold_mv``: worker skills are their accuracy on the gold tasks (crowd-kit's
  `GoldMajorityVote`); workers without gold answers are dropped.
* ``mv`` (and ``gold_mv``'s fallback): when gold is given, each worker's vote is
  weighted by their smoothed gold accuracy ``(right + 1) / (seen + 2)``
  (crowd-kit ``MajorityVote(skills=...)``).
* ``wawa``, ``glad``: crowd-kit offers no gold input; gold answers stay in the data
  like any task, so they shape the estimates only through agreement.

Gold tasks get their aggregated label like any other task (so accuracy against gold
can be measured); callers drop them from verdicts if they only served as control.

Confidence is the method's posterior (``predict_proba``; vote share for ``mv``).
``status`` is ``"decided"`` or ``"needs_more"``: a tie for the top label (``label``
is then ``None``: never a coin flip), fewer than ``min_answers`` answers, or a
confidence under ``target_confidence``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd
from crowdkit.aggregation import GLAD, DawidSkene, GoldMajorityVote, MajorityVote, Wawa

Method = Literal["mv", "wawa", "ds", "glad", "gold_mv"]
METHODS: tuple[str, ...] = ("mv", "wawa", "ds", "glad", "gold_mv")
RESULT_COLUMNS = ["task", "label", "confidence", "n_answers", "method", "status"]
TIE_TOLERANCE = 1e-9


def _gold_series(gold: pd.Series | Mapping[str, str] | pd.DataFrame | None) -> pd.Series | None:
    if gold is None:
        return None
    if isinstance(gold, pd.DataFrame):
        gold = gold.set_index("task")["label"]
    series = pd.Series(gold, dtype=object)
    series.index.name = "task"
    return series


def _gold_skills(data: pd.DataFrame, gold: pd.Series) -> pd.Series:
    seen = data[data["task"].isin(gold.index)]
    right = (seen["label"].to_numpy() == gold.reindex(seen["task"]).to_numpy()).astype(float)
    stats = (
        pd.DataFrame({"worker": seen["worker"], "right": right})
        .groupby("worker")["right"]
        .agg(["sum", "size"])
    )
    skills = (stats["sum"] + 1) / (stats["size"] + 2)
    return skills.reindex(data["worker"].unique()).fillna(0.5)


def posteriors(
    answers: pd.DataFrame, *, method: str = "mv", gold: pd.Series | None = None, seed: int = 0
) -> pd.DataFrame:
    """``task × label`` probabilities from crowd-kit (rows sum to 1)."""
    data = answers[["task", "worker", "label"]].astype({"task": str, "worker": str, "label": str})
    if method == "mv":
        if gold is not None and data["task"].isin(gold.index).any():
            return MajorityVote().fit(data, skills=_gold_skills(data, gold)).probas_
        return MajorityVote().fit_predict_proba(data)
    if method == "wawa":
        # Wawa.predict_proba trips sklearn>=1.6's check_is_fitted; its own definition is
        # a majority vote weighted by the fitted skills, so apply that directly.
        return MajorityVote().fit(data, skills=Wawa().fit(data).skills_).probas_
    if method == "ds":
        return DawidSkene(n_iter=100).fit(data, true_labels=gold).probas_
    if method == "glad":
        np.random.seed(seed)  # GLAD's initialisation draws from numpy's global RNG
        return GLAD(n_iter=100).fit_predict_proba(data)
    if method == "gold_mv":
        if gold is None or not data["task"].isin(gold.index).any():
            raise ValueError("gold_mv needs gold labels for some answered tasks")
        known = data["worker"].isin(data.loc[data["task"].isin(gold.index), "worker"])
        skills = GoldMajorityVote().fit(data[known], gold).skills_  # same sklearn work-around
        return MajorityVote().fit(data[known], skills=skills).probas_
    raise ValueError(f"unknown aggregation method {method!r}; choose from {METHODS}")


def aggregate(
    answers: pd.DataFrame,
    *,
    method: str = "ds",
    gold: pd.Series | Mapping[str, str] | pd.DataFrame | None = None,
    target_confidence: float = 0.0,
    min_answers: int = 1,
    seed: int = 0,
) -> pd.DataFrame:
    """Aggregate ``answers`` (columns ``task``, ``worker``, ``label``; one row per answer).

    ``gold``: known labels (Series/Mapping ``task -> label`` or a frame ``task, label``).
    Returns one row per task: ``task, label, confidence, n_answers, method, status``.
    """
    if answers.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in RESULT_COLUMNS})
    gold_s = _gold_series(gold)
    probas = posteriors(answers, method=method, gold=gold_s, seed=seed).fillna(0.0)
    values = probas.to_numpy(dtype=float)
    order = np.argsort(-values, axis=1, kind="stable")
    top = values[np.arange(len(values)), order[:, 0]]
    second = (
        values[np.arange(len(values)), order[:, 1]]
        if values.shape[1] > 1
        else np.zeros(len(values))
    )
    tie = np.abs(top - second) <= TIE_TOLERANCE
    labels = np.asarray(probas.columns, dtype=object)[order[:, 0]]
    counts = answers.groupby(answers["task"].astype(str)).size()
    out = pd.DataFrame(
        {
            "task": probas.index.astype(str),
            "label": np.where(tie, None, labels),
            "confidence": top,
            "n_answers": counts.reindex(probas.index.astype(str)).fillna(0).astype(int).to_numpy(),
            "method": method,
        }
    )
    needs_more = tie | (out["n_answers"] < min_answers).to_numpy() | (top < target_confidence)
    out["status"] = np.where(needs_more, "needs_more", "decided")
    return out[RESULT_COLUMNS].sort_values("task", kind="stable").reset_index(drop=True)
