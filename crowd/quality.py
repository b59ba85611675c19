"""Crowd metrics per pool and per day, and per worker, from pulled answers (`crowd.pull`)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from crowdkit.metrics.data import alpha_krippendorff
from scipy.stats import beta

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


#: Bin edges of stated confidence for `reliability` (a reliability diagram's x axis).
CONFIDENCE_BINS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
RELIABILITY_COLUMNS = ["bin", "n", "stated", "right", "low", "high"]


def clopper_pearson(right: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of a share ``right / n``."""
    if n == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    low = 0.0 if right == 0 else float(beta.ppf(a, right, n - right + 1))
    high = 1.0 if right == n else float(beta.ppf(1 - a, right + 1, n - right))
    return low, high


def reliability(confidence: pd.Series, right: pd.Series, *,
                bins: tuple[float, ...] = CONFIDENCE_BINS) -> pd.DataFrame:
    """Reliability-diagram data: per bin of stated ``confidence``, the decisions ``n``,
    the mean stated confidence, the share ``right`` and its 95% Clopper–Pearson interval
    (``low``, ``high``). A calibrated crowd has ``stated`` inside ``[low, high]``."""
    conf = pd.Series(confidence, dtype=float).reset_index(drop=True)
    ok = pd.Series(right, dtype=bool).reset_index(drop=True)
    cut = pd.cut(conf, list(bins), include_lowest=True, right=False)
    # the top bin is closed on both sides (1.0 falls in it)
    cut = cut.where(conf < bins[-1], cut.cat.categories[-1])
    rows = []
    for interval, idx in conf.groupby(cut, observed=True).groups.items():
        n = len(idx)
        if not n:
            continue
        k = int(ok.loc[idx].sum())
        low, high = clopper_pearson(k, n)
        rows.append({"bin": f"[{interval.left:g}, {interval.right:g}"
                            f"{']' if interval.right == bins[-1] else ')'}",
                     "n": n, "stated": round(float(conf.loc[idx].mean()), 4),
                     "right": round(k / n, 4), "low": round(low, 4), "high": round(high, 4)})
    return pd.DataFrame(rows, columns=RELIABILITY_COLUMNS)


def control_cost(answers: pd.DataFrame) -> dict:
    """What the control tasks cost: ``answers`` (`crowd_metrics`'s input, paid answers
    only) → control answers, their share of the paid answers, their cost (each
    assignment's ``reward`` split evenly over its tasks) and its share of the spend, and
    control answers per real item."""
    if answers.empty:
        return {"answers": 0, "share_of_answers": None, "cost": 0.0, "share_of_spend": None,
                "per_item": None}
    golden = answers["is_golden"].astype(bool)
    per_task = answers["reward"].astype(float) / answers.groupby("assignment_id")[
        "task"].transform("size")
    spend = float(per_task.sum())
    cost = float(per_task[golden].sum())
    items = answers.loc[~golden, "task"].nunique()
    return {"answers": int(golden.sum()),
            "share_of_answers": round(float(golden.mean()), 4),
            "cost": round(cost, 4),
            "share_of_spend": round(cost / spend, 4) if spend else None,
            "per_item": round(int(golden.sum()) / items, 4) if items else None}
