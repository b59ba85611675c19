"""Crowd metrics per pool and per day, and per worker, from pulled answers (`crowd.pull`)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from crowdkit.metrics.data import alpha_krippendorff

METRIC_COLUMNS = [
    "workers",
    "items",
    "answers",
    "answers_per_item",
    "cost",
    "cost_per_item",
    "median_time_per_item_s",
    "golden_answers",
    "golden_accuracy",
    "alpha",
    "pairwise_agreement",
]


def pairwise_agreement(answers: pd.DataFrame) -> float:
    """Share of agreeing pairs among all pairs of answers to the same task."""
    agree = total = 0
    for labels in answers.groupby("task")["label"]:
        values = list(labels[1])
        for a, b in itertools.combinations(values, 2):
            agree += a == b
            total += 1
    return agree / total if total else float("nan")


def _alpha(answers: pd.DataFrame) -> float:
    multi = answers[answers.groupby("task")["task"].transform("size") > 1]
    if multi.empty or multi["label"].nunique() < 2:
        return float("nan")
    return float(alpha_krippendorff(multi[["task", "worker", "label"]]))


def _metrics(group: pd.DataFrame) -> dict:
    real = group[~group["is_golden"].astype(bool)]
    golden = group[group["is_golden"].astype(bool)]
    cost = (
        float(group.drop_duplicates("assignment_id")["reward"].sum())
        if "reward" in group
        else float("nan")
    )
    n_items = real["task"].nunique()
    return {
        "workers": group["worker"].nunique(),
        "items": n_items,
        "answers": len(real),
        "answers_per_item": len(real) / n_items if n_items else float("nan"),
        "cost": cost,
        "cost_per_item": cost / n_items if n_items else float("nan"),
        "median_time_per_item_s": float(real["time_spent_s"].median())
        if len(real)
        else float("nan"),
        "golden_answers": len(golden),
        "golden_accuracy": float((golden["label"] == golden["golden_label"]).mean())
        if len(golden)
        else np.nan,
        "alpha": _alpha(real),
        "pairwise_agreement": pairwise_agreement(real),
    }


def crowd_metrics(answers: pd.DataFrame, *, by: str = "pool") -> pd.DataFrame:
    """Metrics per ``pool`` (``pool_id``) or per ``day`` (UTC date of ``submitted_at``).

    Input columns: ``task, worker, label, assignment_id, time_spent_s, is_golden,
    golden_label, submitted_at, pool_id, reward`` (rejected assignments should be
    removed first: they are not paid). Output columns: `METRIC_COLUMNS`, indexed by
    ``pool_id`` or ``day``. ``cost`` counts every assignment once (control tasks included).
    """
    if by not in ("pool", "day"):
        raise ValueError("by is 'pool' or 'day'")
    key = (
        answers["pool_id"]
        if by == "pool"
        else pd.to_datetime(answers["submitted_at"], utc=True).dt.date
    )
    rows = {
        k: _metrics(g) for k, g in answers.groupby(key.rename("pool_id" if by == "pool" else "day"))
    }
    out = pd.DataFrame.from_dict(rows, orient="index", columns=METRIC_COLUMNS)
    out.index.name = "pool_id" if by == "pool" else "day"
    return out


def worker_metrics(answers: pd.DataFrame) -> pd.DataFrame:
    """Per worker: ``answers, golden_answers, golden_accuracy, median_time_s``."""
    golden = answers[answers["is_golden"].astype(bool)]
    right = (golden["label"] == golden["golden_label"]).groupby(golden["worker"])
    out = pd.DataFrame(
        {
            "answers": answers.groupby("worker").size(),
            "golden_answers": golden.groupby("worker").size(),
            "golden_accuracy": right.mean(),
            "median_time_s": answers.groupby("worker")["time_spent_s"].median(),
        }
    )
    out["golden_answers"] = out["golden_answers"].fillna(0).astype(int)
    out.index.name = "worker"
    return out.reset_index()
