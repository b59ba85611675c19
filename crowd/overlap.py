"""Dynamic overlap: ask for more answers only where the crowd has not agreed yet."""

from __future__ import annotations

import pandas as pd

from crowd.aggregation import aggregate
from crowd.config import CrowdConfig

NEXT_COLUMNS = ["task", "n_answers", "confidence", "need", "overlap"]


def next_round(
    answers: pd.DataFrame,
    *,
    config: CrowdConfig,
    method: str | None = None,
    gold: pd.Series | None = None,
    step: int = 1,
) -> pd.DataFrame:
    """Items needing more answers and how many, from answers so far (``task, worker, label``).

    An item gets ``max(min_answers - n, step)`` more answers (capped at
    ``max_overlap - n``) when its aggregate (``config.aggregation`` unless ``method``)
    is a tie, rests on fewer than ``min_answers`` answers, or has confidence under
    ``target_confidence``. Items at ``max_overlap`` are left as they are (their
    aggregate stays ``needs_more`` for a moderator). Returns ``task, n_answers,
    confidence, need, overlap`` (``overlap`` = the new total to ask Toloka for).
    """
    verdicts = aggregate(
        answers,
        method=method or config.aggregation,
        gold=gold,
        target_confidence=config.target_confidence,
        min_answers=config.min_answers,
        temper_min_gold=config.temper_min_gold,
        lone_answers=config.lone_answers,
    )
    control = (
        set(answers.loc[answers["is_golden"].astype(bool), "task"])
        if "is_golden" in answers
        else set()
    )
    pending = verdicts[
        (verdicts["status"] == "needs_more")
        & (verdicts["n_answers"] < config.max_overlap)
        & ~verdicts["task"].isin(control)
    ]
    n = pending["n_answers"].astype(int)
    need = (config.min_answers - n).clip(lower=step).clip(upper=config.max_overlap - n)
    out = pd.DataFrame(
        {
            "task": pending["task"],
            "n_answers": n,
            "confidence": pending["confidence"],
            "need": need.astype(int),
        }
    )
    out["overlap"] = out["n_answers"] + out["need"]
    return out[NEXT_COLUMNS].reset_index(drop=True)
