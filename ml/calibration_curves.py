"""Precision / recall curves over thresholds (see :mod:`ml.calibration`).

- ``direction="ge"`` (classifier probabilities): predicted positive iff
  ``score >= threshold``;
- ``direction="le"`` (similarity distances): predicted "same" iff
  ``distance <= threshold``.

Both inclusive. Precision is NaN (undefined) where nothing is predicted positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

Direction = Literal["ge", "le"]

CURVE_COLUMNS: tuple[str, ...] = (
    "threshold",
    "n_auto",
    "n_routed",
    "tp",
    "fp",
    "fn",
    "tn",
    "precision",
    "recall",
    "accuracy",
)


# --------------------------------------------------------------------------- curves


def _distinct_sorted(values: np.ndarray) -> np.ndarray:
    """Distinct values of an ascending array (cheaper than ``np.unique`` re-sorting)."""
    if values.size == 0:
        return values
    keep = np.empty(values.size, dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def binary_curve(
    *,
    scores: ArrayLike,
    positive: ArrayLike,
    thresholds: ArrayLike | None = None,
    direction: Direction = "ge",
) -> pd.DataFrame:
    """Confusion counts and rates at every candidate threshold.

    ``scores``: one float per labelled item (``-inf`` allowed: never predicted
    positive under ``"ge"``; NaN is rejected). ``positive``: the ground truth, one
    bool per item. ``thresholds``: candidate thresholds; default all distinct finite
    scores (every distinct operating point). ``direction``: ``"ge"`` predicts positive
    iff ``score >= threshold``; ``"le"`` iff ``score <= threshold``.

    Returns one row per threshold, ascending by threshold, columns (``CURVE_COLUMNS``):

    - ``threshold`` (float);
    - ``n_auto`` (int): items predicted positive = decided automatically (tp + fp);
    - ``n_routed`` (int): the others, routed to people (fn + tn);
    - ``tp``, ``fp``, ``fn``, ``tn`` (int);
    - ``precision`` (float): tp / n_auto, **NaN when n_auto == 0**;
    - ``recall`` (float): tp / (tp + fn), NaN when there are no positives;
    - ``accuracy`` (float): (tp + tn) / n.

    ``attrs`` carries ``direction``, ``n_positive`` and ``n_negative``.
    Sort + cumulative sums + binary search: O(n log n); 10^6 scores in ~0.1 s.
    """
    if direction not in ("ge", "le"):
        raise ValueError(f"direction must be 'ge' or 'le', got {direction!r}")
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(positive).ravel()
    if y.dtype != bool:
        if y.size and not np.isin(y, (0, 1, True, False)).all():
            raise ValueError("positive must be boolean (or 0/1)")
        y = y.astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores and positive differ in length: {s.size} vs {y.size}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    cum_pos = np.zeros(s.size + 1, dtype=np.int64)
    np.cumsum(y[order], out=cum_pos[1:])
    n = int(s.size)
    n_pos = int(cum_pos[-1])
    n_neg = n - n_pos
    if thresholds is None:
        t = _distinct_sorted(s_sorted[np.isfinite(s_sorted)])
    else:
        t = np.asarray(thresholds, dtype=np.float64).ravel()
        if np.isnan(t).any():
            raise ValueError("thresholds contain NaN")
        t = np.unique(t)
    if direction == "ge":
        below = np.searchsorted(s_sorted, t, side="left")
        n_auto = n - below
        tp = n_pos - cum_pos[below]
    else:
        n_auto = np.searchsorted(s_sorted, t, side="right")
        tp = cum_pos[n_auto]
    n_auto = n_auto.astype(np.int64)
    fp = n_auto - tp
    fn = n_pos - tp
    tn = n_neg - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_auto > 0, tp / np.maximum(n_auto, 1), np.nan)
        recall = np.full(t.shape, np.nan) if n_pos == 0 else tp / n_pos
        accuracy = np.full(t.shape, np.nan) if n == 0 else (tp + tn) / n
    curve = pd.DataFrame(
        {
            "threshold": t,
            "n_auto": n_auto,
            "n_routed": n - n_auto,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
            "precision": precision,
            "recall": recall,
            "accuracy": accuracy,
        }
    )
    curve.attrs.update(direction=direction, n_positive=n_pos, n_negative=n_neg)
    return curve


def label_curve(
    *,
    proba: ArrayLike,
    y_true: ArrayLike,
    classes: Sequence[Any],
    label: Any,
    thresholds: ArrayLike | None = None,
) -> pd.DataFrame:
    """One-vs-rest curve for one label of a multiclass classifier (a band on ``label``).

    ``proba``: shape ``(n, k)``, column ``j`` is P(``classes[j]``). ``y_true``: the
    true label of each item (values from ``classes``).

    Definition: an item is decided automatically as ``label`` at threshold ``t`` iff
    ``label`` is its argmax (first column wins ties, as ``numpy.argmax``) **and**
    ``P(label) >= t``. Positives are items whose true label is ``label``. Items whose
    argmax is another label are never predicted positive here (score ``-inf``) but
    stay in the counts, so recall is over all true ``label`` items and ``n_routed``
    counts every item this band does not decide (another label's band may).
    Default thresholds: the distinct ``P(label)`` of argmax items. Columns as
    :func:`binary_curve`.
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(classes):
        raise ValueError(f"proba must have shape (n, {len(classes)}), got {p.shape}")
    j = list(classes).index(label)
    wins = p.argmax(axis=1) == j
    score = np.where(wins, p[:, j], -np.inf)
    positive = np.asarray(y_true) == label
    if thresholds is None:
        thresholds = _distinct_sorted(np.sort(p[wins, j]))
    return binary_curve(scores=score, positive=positive, thresholds=thresholds, direction="ge")


def curve_totals(curve: pd.DataFrame) -> tuple[int, int]:
    """``(n_positive, n_negative)`` of the labelled set behind ``curve``."""
    if "n_positive" in curve.attrs and "n_negative" in curve.attrs:
        return int(curve.attrs["n_positive"]), int(curve.attrs["n_negative"])
    if len(curve) == 0:
        return 0, 0
    first = curve.iloc[0]
    return int(first["tp"] + first["fn"]), int(first["fp"] + first["tn"])


def curve_direction(curve: pd.DataFrame) -> Direction:
    """``"ge"`` or ``"le"``, from ``curve.attrs`` (default ``"ge"``)."""
    direction = curve.attrs.get("direction", "ge")
    if direction not in ("ge", "le"):
        raise ValueError(f"curve.attrs['direction'] must be 'ge' or 'le', got {direction!r}")
    return direction


def counts_at(curve: pd.DataFrame, *, thresholds: ArrayLike) -> pd.DataFrame:
    """The curve read at arbitrary thresholds, in the order given (same columns).

    Exact when ``curve`` was built on all distinct scores (the default): under
    ``"ge"`` the row of the smallest curve threshold ``>= t`` is used (same predicted
    set), under ``"le"`` the largest ``<= t``; no such row means nothing is predicted
    positive (precision NaN). For a curve built on a coarser grid it is the nearest
    grid point on the strict side.
    """
    direction = curve_direction(curve)
    n_pos, n_neg = curve_totals(curve)
    t = np.asarray(thresholds, dtype=np.float64).ravel()
    grid = curve["threshold"].to_numpy(dtype=np.float64)
    if direction == "ge":
        idx = np.searchsorted(grid, t, side="left")
        found = idx < grid.size
    else:
        idx = np.searchsorted(grid, t, side="right") - 1
        found = idx >= 0
    safe = np.clip(idx, 0, max(grid.size - 1, 0))
    tp = np.where(found, curve["tp"].to_numpy()[safe] if grid.size else 0, 0).astype(np.int64)
    n_auto = np.where(found, curve["n_auto"].to_numpy()[safe] if grid.size else 0, 0)
    n_auto = n_auto.astype(np.int64)
    n = n_pos + n_neg
    fp = n_auto - tp
    tn = n_neg - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        out = pd.DataFrame(
            {
                "threshold": t,
                "n_auto": n_auto,
                "n_routed": n - n_auto,
                "tp": tp,
                "fp": fp,
                "fn": n_pos - tp,
                "tn": tn,
                "precision": np.where(n_auto > 0, tp / np.maximum(n_auto, 1), np.nan),
                "recall": tp / n_pos if n_pos else np.full(t.shape, np.nan),
                "accuracy": (tp + tn) / n if n else np.full(t.shape, np.nan),
            }
        )
    out.attrs.update(curve.attrs)
    return out
