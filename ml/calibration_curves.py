"""Precision / recall curves over thresholds (see :mod:`ml.calibration`).

- ``direction="ge"`` (classifier probabilities): predicted positive iff
  ``score >= threshold``;
- ``direction="le"`` (similarity distances): predicted "same" iff
  ``distance <= threshold``.

Both inclusive. Precision is NaN (undefined) where nothing is predicted positive.

**Weighted curves** (inverse-probability weighting). Labels are not a simple random
sample: an item the automation decided reaches people only through a spot check (say
5 %), an uncertain one always. With ``weights`` (``1 / P(the item got its label)``, one
per labelled item) the curve estimates what the *whole stream* would show: precision
is the weighted share ``sum(w * positive) / sum(w)`` above the threshold, and the bound
rests on the **effective sample size** (Kish) ``n_eff = sum(w)**2 / sum(w**2)`` of the
items above it, so ``n_auto`` / ``tp`` / ``fp`` become effective (float) counts with
``tp / n_auto`` the weighted precision; ``labels_auto`` (int) is the number of labels
behind them and ``weight_auto`` the estimated number of stream items decided (what
threshold choice maximises). Unit weights give back the plain curve.
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


def _cut_offs(s_sorted: np.ndarray, thresholds: Any) -> np.ndarray:
    """The cut-offs to tabulate: the given ones (sorted, unique), or every distinct
    finite score."""
    if thresholds is None:
        return _distinct_sorted(s_sorted[np.isfinite(s_sorted)])
    t = np.asarray(thresholds, dtype=np.float64).ravel()
    if np.isnan(t).any():
        raise ValueError("thresholds contain NaN")
    return np.unique(t)


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
    weights: ArrayLike | None = None,
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

    ``weights`` (positive floats, one per item): a weighted curve, see the module
    docstring (:func:`weighted_binary_curve`).
    """
    if weights is not None:
        return weighted_binary_curve(scores=scores, positive=positive, weights=weights,
                                     thresholds=thresholds, direction=direction)
    if direction not in ("ge", "le"):
        raise ValueError(f"direction must be 'ge' or 'le', got {direction!r}")
    s, y = _check(scores, positive)
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    cum_pos = np.zeros(s.size + 1, dtype=np.int64)
    np.cumsum(y[order], out=cum_pos[1:])
    n = int(s.size)
    n_pos = int(cum_pos[-1])
    n_neg = n - n_pos
    t = _cut_offs(s_sorted, thresholds)
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


def _check(scores: ArrayLike, positive: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
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
    return s, y


def effective_size(weights: ArrayLike) -> float:
    """Kish's effective sample size ``sum(w)**2 / sum(w**2)`` (``len(w)`` for equal
    weights; 0 for none)."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    sq = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / sq if sq > 0 else 0.0


def weighted_binary_curve(
    *,
    scores: ArrayLike,
    positive: ArrayLike,
    weights: ArrayLike,
    thresholds: ArrayLike | None = None,
    direction: Direction = "ge",
) -> pd.DataFrame:
    """:func:`binary_curve` with inverse-probability weights (module docstring).

    Columns: ``CURVE_COLUMNS`` plus ``labels_auto`` (int, labels above the threshold)
    and ``weight_auto`` (float, ``sum(w)`` above it). ``n_auto`` is the effective sample
    size of the items above the threshold, ``tp = precision * n_auto``, ``fp = n_auto -
    tp``; ``n_routed``, ``fn``, ``tn`` are on the same effective scale for the rest
    (``n_eff(all) - n_auto``, split by the weighted share of positives), ``recall`` and
    ``accuracy`` are weighted. ``attrs``: as :func:`binary_curve` (raw label counts)
    plus ``weighted=True``, ``n_effective`` (all items) and ``weight_total``.
    """
    if direction not in ("ge", "le"):
        raise ValueError(f"direction must be 'ge' or 'le', got {direction!r}")
    s, y = _check(scores, positive)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != s.shape:
        raise ValueError(f"weights and scores differ in length: {w.size} vs {s.size}")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError("weights must be positive and finite (1 / sampling probability)")
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted, w_sorted = s[order], y[order], w[order]

    def cum(values: np.ndarray) -> np.ndarray:
        out = np.zeros(values.size + 1, dtype=np.float64)
        np.cumsum(values, out=out[1:])
        return out

    c_n = np.arange(s.size + 1, dtype=np.int64)
    c_w, c_w2, c_wp = cum(w_sorted), cum(w_sorted * w_sorted), cum(w_sorted * y_sorted)
    t = _cut_offs(s_sorted, thresholds)
    if direction == "ge":
        cut = np.searchsorted(s_sorted, t, side="left")

        def above(c: np.ndarray) -> np.ndarray:
            return c[-1] - c[cut]
    else:
        cut = np.searchsorted(s_sorted, t, side="right")

        def above(c: np.ndarray) -> np.ndarray:
            return c[cut]
    labels_auto = above(c_n).astype(np.int64)
    w_auto, w2_auto, wp_auto = above(c_w), above(c_w2), above(c_wp)
    w_all, wp_all = float(c_w[-1]), float(c_wp[-1])
    n_eff_all = effective_size(w)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_auto = np.where(w2_auto > 0, w_auto * w_auto / np.where(w2_auto > 0, w2_auto, 1), 0.0)
        precision = np.where(w_auto > 0, wp_auto / np.where(w_auto > 0, w_auto, 1), np.nan)
        tp = np.nan_to_num(precision) * n_auto
        rest_w = w_all - w_auto
        rest_pos = np.where(rest_w > 0, (wp_all - wp_auto) / np.where(rest_w > 0, rest_w, 1),
                            0.0)
        n_routed = np.maximum(n_eff_all - n_auto, 0.0)
        recall = np.full(t.shape, np.nan) if wp_all == 0 else wp_auto / wp_all
        accuracy = (np.full(t.shape, np.nan) if w_all == 0 else
                    (wp_auto + (rest_w - (wp_all - wp_auto))) / w_all)
    curve = pd.DataFrame(
        {
            "threshold": t,
            "n_auto": n_auto,
            "n_routed": n_routed,
            "tp": tp,
            "fp": n_auto - tp,
            "fn": rest_pos * n_routed,
            "tn": (1.0 - rest_pos) * n_routed,
            "precision": precision,
            "recall": recall,
            "accuracy": accuracy,
            "labels_auto": labels_auto,
            "weight_auto": w_auto,
        }
    )
    n_pos = int(y.sum())
    curve.attrs.update(direction=direction, n_positive=n_pos, n_negative=int(s.size) - n_pos,
                       weighted=True, n_effective=n_eff_all, weight_total=w_all)
    return curve


def is_weighted(curve: pd.DataFrame) -> bool:
    """Whether ``curve`` came from :func:`weighted_binary_curve`."""
    return bool(curve.attrs.get("weighted")) or "weight_auto" in curve.columns


def label_curve(
    *,
    proba: ArrayLike,
    y_true: ArrayLike,
    classes: Sequence[Any],
    label: Any,
    thresholds: ArrayLike | None = None,
    weights: ArrayLike | None = None,
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
    :func:`binary_curve` (``weights``: a weighted curve).
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
    return binary_curve(scores=score, positive=positive, thresholds=thresholds, direction="ge",
                        weights=weights)


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
    weighted = is_weighted(curve)
    dtype = np.float64 if weighted else np.int64

    def read(column: str) -> np.ndarray:
        return np.where(found, curve[column].to_numpy()[safe] if grid.size else 0, 0)

    tp = read("tp").astype(dtype)
    n_auto = read("n_auto").astype(dtype)
    if weighted:
        out = pd.DataFrame({"threshold": t, "n_auto": n_auto,
                            "n_routed": np.maximum(
                                float(curve.attrs.get("n_effective", 0.0)) - n_auto, 0.0),
                            "tp": tp, "fp": n_auto - tp, "fn": read("fn"), "tn": read("tn"),
                            "precision": np.where(n_auto > 0, tp / np.maximum(n_auto, 1e-300),
                                                  np.nan),
                            "recall": read("recall"), "accuracy": read("accuracy"),
                            "labels_auto": read("labels_auto").astype(np.int64),
                            "weight_auto": read("weight_auto")})
        out.attrs.update(curve.attrs)
        return out
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
