"""Precision / recall calibration: curves over thresholds, and threshold choice.

The model is binary per decision: an item is *predicted positive* (decided
automatically) when its score passes a threshold, everything else goes to people.

- Classifier probabilities, ``direction="ge"``: predicted positive iff
  ``score >= threshold`` (inclusive).
- Similarity distances, ``direction="le"``: predicted "same" iff
  ``distance <= threshold`` (inclusive). The seed example: distances 0.55 and 0.75
  are both "same" at T = 0.8, only 0.55 at T = 0.6, neither at T = 0.4.

Precision is **undefined (NaN)** where nothing is predicted positive, never 0 or 1;
recall is NaN where there are no positives at all.

A threshold is chosen to maximise automation subject to the **one-sided lower
confidence bound** on precision (Wilson or Clopper–Pearson, see
:mod:`ml.calibration_bounds`) being at least the target, never the point estimate.
When no threshold can be backed, the choice has ``threshold=None`` and an estimate
of how many more labels would be needed. ``docs/calibration.md`` has the details.

Reporting helpers (what-if on today's scores, spot checks, threshold tables) live
in :mod:`ml.calibration_report` and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from ml.calibration_bounds import (
    Method,
    clopper_pearson_bounds,
    lower_bound_clears,
    proportion_bounds,
    required_trials,
    wilson_bounds,
)
from ml.calibration_curves import (
    CURVE_COLUMNS,
    binary_curve,
    counts_at,
    curve_direction,
    curve_totals,
    effective_size,
    is_weighted,
    label_curve,
    weighted_binary_curve,
)

Objective = Literal["max_automation", "f_beta", "cost"]

__all__ = [
    "CURVE_COLUMNS",
    "Costs",
    "ThresholdChoice",
    "aggregate_pair_votes",
    "binary_curve",
    "choose_reuse_distance",
    "reuse_allowed_by_label",
    "choose_threshold",
    "clopper_pearson_bounds",
    "counts_at",
    "curve_direction",
    "curve_totals",
    "curve_table",
    "effective_size",
    "is_weighted",
    "weighted_binary_curve",
    "WhatIf",
    "label_curve",
    "lower_bound_clears",
    "majority_same",
    "proportion_bounds",
    "required_trials",
    "similarity_curve",
    "spot_check_precision",
    "what_if",
    "wilson_bounds",
]


# --------------------------------------------------------------------------- choice


@dataclass(frozen=True)
class Costs:
    """Cost per item of each outcome, for ``objective="cost"`` (any currency unit).

    ``false_positive``: an automatic decision that is wrong. ``false_negative``: a
    positive left undecided by the automation (if people then decide it correctly,
    set this to 0 and let ``routed`` carry its cost). ``routed``: sending one item to
    people (e.g. price per judgment × overlap).
    """

    false_positive: float
    false_negative: float = 0.0
    routed: float = 0.0


@dataclass(frozen=True)
class ThresholdChoice:
    """The outcome of :func:`choose_threshold`.

    ``threshold`` is ``None`` when no threshold satisfies the rule; then
    ``labels_needed`` (may also be ``None``) and ``message`` say why and what would
    help. ``precision_lower`` is the one-sided lower bound at ``confidence`` that the
    rule checked; the counts are on the labelled (calibration) set at ``threshold``.
    """

    threshold: float | None
    direction: str
    objective: str
    target_precision: float | None
    confidence: float
    method: str
    n_labelled: int
    n_auto: int
    n_routed: int
    tp: int
    fp: int
    precision: float | None
    precision_lower: float | None
    recall: float | None
    objective_value: float | None
    labels_needed: int | None
    labels_needed_threshold: float | None
    message: str
    #: weighted curves only: the effective sample size the bound rests on (Kish) and
    #: the estimated number of stream items decided (``sum(w)`` above the threshold);
    #: ``n_auto`` is then the number of labels behind it, ``tp``/``fp`` effective counts
    n_effective: float | None = None
    weight_auto: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (for a calibration run's ``result``)."""
        return asdict(self)


def _none_if_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _lower(*, tp: np.ndarray, n_auto: np.ndarray, confidence: float, method: Method) -> np.ndarray:
    lower, _ = proportion_bounds(
        successes=tp, trials=n_auto, confidence=confidence, method=method, sided="one"
    )
    return np.atleast_1d(lower)


def _pareto_front(*, tp: np.ndarray, n_auto: np.ndarray) -> np.ndarray:
    """Rows (n_auto > 0) that no row beats on both precision and n_auto.

    The lower bound grows with precision at fixed n and with n at fixed precision,
    so the best lower bound, and the cheapest route to the target, lie on this front.
    """
    rows = np.flatnonzero(n_auto > 0)
    if rows.size == 0:
        return rows
    order = rows[np.argsort(-n_auto[rows], kind="stable")]
    precision = tp[order] / n_auto[order]
    running = np.maximum.accumulate(precision)
    keep = np.empty(order.size, dtype=bool)
    keep[0] = True
    keep[1:] = precision[1:] > running[:-1]
    return order[keep]


def _labels_needed(
    *,
    tp: np.ndarray,
    n_auto: np.ndarray,
    thresholds: np.ndarray,
    n_labelled: int,
    target: float,
    confidence: float,
    method: Method,
) -> tuple[int | None, float | None]:
    """How many more labels (same mix) until some threshold's lower bound clears ``target``.

    For each threshold with observed precision ``p = tp / n_auto > target``: assuming
    ``p`` holds and the share of labelled items above the threshold stays
    ``n_auto / n_labelled``, the threshold needs ``m = required_trials(p)`` automatic
    items, i.e. ``ceil(m * n_labelled / n_auto)`` labelled items in all. The estimate
    is the smallest such total minus ``n_labelled``, over the Pareto front of
    (precision, n_auto). ``(None, None)`` when no threshold's precision beats the target.
    """
    front = _pareto_front(tp=tp, n_auto=n_auto)
    keep = front[tp[front] / n_auto[front] > target]
    if keep.size == 0:
        return None, None
    needed_auto = required_trials(
        proportion=tp[keep] / n_auto[keep], target=target, confidence=confidence, method=method
    )
    with np.errstate(invalid="ignore", over="ignore"):
        total = np.ceil(needed_auto * n_labelled / n_auto[keep])
    best = int(np.argmin(total))
    if not np.isfinite(total[best]):
        return None, None
    return max(int(total[best]) - n_labelled, 1), float(thresholds[keep][best])


def choose_threshold(
    curve: pd.DataFrame,
    *,
    target_precision: float | None = None,
    confidence: float = 0.95,
    method: Method = "wilson",
    objective: Objective = "max_automation",
    beta: float = 1.0,
    costs: Costs | None = None,
) -> ThresholdChoice:
    """Choose a threshold on ``curve`` (from :func:`binary_curve` and friends).

    Eligible thresholds: the one-sided ``confidence`` lower bound (``method``) on
    precision, ``tp / n_auto``, is ``>= target_precision`` (NaN bounds, i.e. nothing
    automated, are never eligible). The bound is not monotone in the threshold, so
    every row is checked. Among eligible rows:

    - ``"max_automation"`` (needs ``target_precision``): largest ``n_auto``;
    - ``"f_beta"``: largest F-beta (``beta`` weighs recall), point estimate;
    - ``"cost"`` (needs ``costs``): smallest expected cost per labelled item,
      ``(fp·c_fp + fn·c_fn + n_routed·c_routed) / n``; a threshold is proposed only
      if it is cheaper than automating nothing.

    Ties go to the higher lower bound, then to the stricter threshold. For
    ``"f_beta"`` and ``"cost"`` the precision rule applies only if
    ``target_precision`` is given. When nothing is eligible the choice has
    ``threshold=None``, ``labels_needed`` (see ``_labels_needed``) and a message.
    """
    if objective not in ("max_automation", "f_beta", "cost"):
        raise ValueError(f"unknown objective {objective!r}")
    if objective == "max_automation" and target_precision is None:
        raise ValueError("objective='max_automation' needs target_precision")
    if objective == "cost" and costs is None:
        raise ValueError("objective='cost' needs costs=Costs(...)")
    if target_precision is not None and not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision!r}")
    if beta <= 0:
        raise ValueError("beta must be positive")
    direction = curve_direction(curve)
    n_pos, n_neg = curve_totals(curve)
    n = n_pos + n_neg
    weighted = is_weighted(curve)
    count = np.float64 if weighted else np.int64  # weighted: effective (float) counts
    t = curve["threshold"].to_numpy(dtype=np.float64)
    tp = curve["tp"].to_numpy(dtype=count)
    fp = curve["fp"].to_numpy(dtype=count)
    fn = curve["fn"].to_numpy(dtype=count)
    n_auto = curve["n_auto"].to_numpy(dtype=count)
    n_routed = curve["n_routed"].to_numpy(dtype=count)
    if target_precision is None:
        eligible = np.ones(t.shape, dtype=bool)
    else:
        eligible = lower_bound_clears(
            successes=tp,
            trials=n_auto,
            target=target_precision,
            confidence=confidence,
            method=method,
        )

    if objective == "max_automation":
        # weighted: the estimated stream items decided, not the labels behind them
        value = (curve["weight_auto"].to_numpy(dtype=np.float64) if weighted
                 else n_auto.astype(np.float64))
    elif objective == "f_beta":
        b2 = beta * beta
        denom = (1.0 + b2) * tp + b2 * fn + fp
        value = np.where(denom > 0, (1.0 + b2) * tp / np.maximum(denom, 1), 0.0)
    else:
        assert costs is not None
        total = costs.false_positive * fp + costs.false_negative * fn + costs.routed * n_routed
        value = -total / max(n, 1)
        baseline = -(costs.false_negative * n_pos + costs.routed * n) / max(n, 1)
        eligible &= value > baseline

    common: dict[str, Any] = dict(
        direction=direction,
        objective=objective,
        target_precision=target_precision,
        confidence=confidence,
        method=method,
        n_labelled=n,
    )
    if not eligible.any():
        return _no_choice(
            common=common,
            t=t,
            tp=tp,
            n_auto=n_auto,
            n=n,
            objective=objective,
            target_precision=target_precision,
            confidence=confidence,
            method=method,
        )
    idx = np.flatnonzero(eligible)
    idx = idx[value[idx] == value[idx].max()]  # ties: bounds only where needed (CP is slow)
    tied_lower = _lower(tp=tp[idx], n_auto=n_auto[idx], confidence=confidence, method=method)
    strict = t[idx] if direction == "ge" else -t[idx]
    # np.lexsort: last key is primary; pick the max of (lower bound, strictness)
    pick = int(np.lexsort((strict, np.nan_to_num(tied_lower, nan=-1.0)))[-1])
    i = int(idx[pick])
    lower_i = float(tied_lower[pick])
    precision = tp[i] / n_auto[i] if n_auto[i] else float("nan")
    plain_recall = tp[i] / n_pos if n_pos else float("nan")
    recall = float(curve["recall"].iat[i]) if weighted else plain_recall
    bound_text = (
        ""
        if target_precision is None
        else (
            f"; {confidence:.0%} lower bound on precision {lower_i:.4f} >= target "
            f"{target_precision}"
        )
    )
    weighted_fields: dict[str, Any] = {}
    decided_text = f"decides {n_auto[i]} of {n} labelled items"
    if weighted:
        labels_i = int(curve["labels_auto"].iat[i])
        weight_i = float(curve["weight_auto"].iat[i])
        weighted_fields = {"n_effective": float(n_auto[i]), "weight_auto": weight_i}
        decided_text = (f"decides an estimated {weight_i:.0f} of "
                        f"{float(curve.attrs.get('weight_total', n)):.0f} items (weighted by "
                        f"sampling probability; rests on {labels_i} labels, effective sample "
                        f"size {n_auto[i]:.0f})")
    return ThresholdChoice(
        **common,
        **weighted_fields,
        threshold=float(t[i]),
        n_auto=int(curve["labels_auto"].iat[i]) if weighted else int(n_auto[i]),
        n_routed=(n - int(curve["labels_auto"].iat[i])) if weighted else int(n_routed[i]),
        tp=int(round(tp[i])),
        fp=int(round(fp[i])),
        precision=_none_if_nan(precision),
        precision_lower=_none_if_nan(lower_i),
        recall=_none_if_nan(recall),
        objective_value=float(-value[i] if objective == "cost" else value[i]),
        labels_needed=None,
        labels_needed_threshold=None,
        message=(
            f"{objective}: threshold {t[i]:.6g} {decided_text} "
            f"automatically (precision {precision:.4f}){bound_text}"
        ),
    )


def _no_choice(
    *,
    common: dict[str, Any],
    t: np.ndarray,
    tp: np.ndarray,
    n_auto: np.ndarray,
    n: int,
    objective: str,
    target_precision: float | None,
    confidence: float,
    method: Method,
) -> ThresholdChoice:
    needed: int | None = None
    at: float | None = None
    if n == 0:
        message = "no labelled items: nothing can be backed"
    elif target_precision is None:
        message = f"{objective}: no threshold does better than automating nothing"
    else:
        needed, at = _labels_needed(
            tp=tp,
            n_auto=n_auto,
            thresholds=t,
            n_labelled=n,
            target=target_precision,
            confidence=confidence,
            method=method,
        )
        front = _pareto_front(tp=tp, n_auto=n_auto)
        lower = _lower(tp=tp[front], n_auto=n_auto[front], confidence=confidence, method=method)
        best = f"{lower.max():.4f}" if lower.size else "undefined"
        message = (
            f"no threshold has a {confidence:.0%} {method} lower bound on precision >= "
            f"{target_precision} (best lower bound {best}, {n} labelled items)"
        )
        if objective == "cost":
            message += " that is also cheaper than automating nothing"
        if needed is None:
            message += "; no threshold reaches the target even as a point estimate, so "
            message += "more labels of the same kind will not help"
        else:
            message += (
                f"; about {needed} more labelled items of the same mix are needed, "
                f"if the precision observed at threshold {at:.6g} holds"
            )
    return ThresholdChoice(
        **common,
        threshold=None,
        n_auto=0,
        n_routed=n,
        tp=0,
        fp=0,
        precision=None,
        precision_lower=None,
        recall=None,
        objective_value=None,
        labels_needed=needed,
        labels_needed_threshold=at,
        message=message,
    )


# --------------------------------------------------------------------------- similarity

SAME_VOTES = frozenset({"s", "same", "similar", "yes", "y", "true", "1"})


def _is_same_vote(vote: Any) -> bool:
    if isinstance(vote, str):
        return vote.strip().lower() in SAME_VOTES
    return bool(vote)


def majority_same(votes: Sequence[Any]) -> bool:
    """Strict majority of one pair's votes says "same" (a tie is *not* same).

    A vote is "same" if it is truthy, or a string in ``SAME_VOTES``
    (case-insensitive: ``"S"``, ``"same"``, ``"similar"``, …); ``"N"`` is not.
    """
    n_same = sum(_is_same_vote(v) for v in votes)
    return n_same * 2 > len(votes)


def aggregate_pair_votes(votes: pd.DataFrame) -> pd.DataFrame:
    """Majority vote per pair from long-format votes.

    Input columns: ``pair_id``, ``worker``, ``same`` (bool or "S"/"N" strings, see
    :func:`majority_same`). Output, one row per ``pair_id`` (sorted): ``pair_id``,
    ``n_votes`` (int), ``n_same`` (int), ``same`` (bool, strict majority; ties are
    not same).
    """
    missing = {"pair_id", "worker", "same"} - set(votes.columns)
    if missing:
        raise ValueError(f"votes lacks columns {sorted(missing)}")
    flags = votes["same"].map(_is_same_vote).astype(bool)
    grouped = flags.groupby(votes["pair_id"])
    out = pd.DataFrame({"n_votes": grouped.size(), "n_same": grouped.sum().astype(np.int64)})
    out["same"] = out["n_same"] * 2 > out["n_votes"]
    return out.reset_index()


def similarity_curve(pairs: pd.DataFrame, *, thresholds: ArrayLike | None = None) -> pd.DataFrame:
    """Curve over reuse distances: a pair is predicted "same" iff ``distance <= T``.

    Input columns: ``distance`` (float) and either ``same`` (bool: humans' aggregated
    verdict that the two items deserve the same decision) or ``votes`` (a list of one
    pair's votes, aggregated by :func:`majority_same`). Identifying columns
    (``pair_id`` or ``item_a``/``item_b``) are allowed and ignored. Returns
    :func:`binary_curve` columns with ``direction="le"``.
    """
    if "distance" not in pairs.columns:
        raise ValueError("pairs lacks column 'distance'")
    if "same" in pairs.columns:
        same = pairs["same"].astype(bool).to_numpy()
    elif "votes" in pairs.columns:
        same = np.array([majority_same(list(v)) for v in pairs["votes"]], dtype=bool)
    else:
        raise ValueError("pairs needs a 'same' or a 'votes' column")
    return binary_curve(
        scores=pairs["distance"].to_numpy(dtype=np.float64),
        positive=same,
        thresholds=thresholds,
        direction="le",
    )


def choose_reuse_distance(
    pairs: pd.DataFrame,
    *,
    target_precision: float,
    confidence: float = 0.95,
    method: Method = "wilson",
    objective: Objective = "max_automation",
    beta: float = 1.0,
    costs: Costs | None = None,
) -> ThresholdChoice:
    """The similarity reuse distance: :func:`choose_threshold` on :func:`similarity_curve`.

    Reuse a past decision iff ``distance <= threshold``; "precision" is the share of
    reused pairs that humans call the same.

    With a ``reused_label`` column (the label reuse would copy: the neighbour's), the
    distance must also hold **for each label reused**: a distance qualifies only where,
    for every label with reused pairs at or below it, the one-sided lower bound of that
    label's precision clears the target too (rows with no ``reused_label`` count in the
    pooled curve only). Pooled over labels the majority label carries the bound: on the
    Davidson tweets reusing an "action" verdict within 0.3 is ~98 % right, an "OK" one
    ~86 %, so a pooled 95 % bound would reuse OK verdicts at well under 95 %.
    """
    curve = similarity_curve(pairs)
    kwargs = {"target_precision": target_precision, "confidence": confidence,
              "method": method, "objective": objective, "beta": beta, "costs": costs}
    pooled = choose_threshold(curve, **kwargs)  # type: ignore[arg-type]
    if "reused_label" not in pairs.columns or not pairs["reused_label"].notna().any():
        return pooled
    allowed = reuse_allowed_by_label(pairs, thresholds=curve["threshold"].to_numpy(),
                                     target_precision=target_precision,
                                     confidence=confidence, method=method)
    attrs = dict(curve.attrs)
    each = curve[allowed].reset_index(drop=True)
    each.attrs.update(attrs)
    choice = choose_threshold(each, **kwargs)  # type: ignore[arg-type]
    if choice.threshold is not None or pooled.threshold is None:
        # nothing backed even pooled: the pooled estimate of the labels needed (a floor)
        return choice if choice.threshold is not None else pooled
    from dataclasses import replace

    return replace(choice, message=(
        f"pairs pooled over labels back a reuse distance of {pooled.threshold:g}, but not "
        "every label reused clears the target there (each label's one-sided lower bound "
        "must): more labelled items of the labels that fall short are needed"))


def reuse_allowed_by_label(pairs: pd.DataFrame, *, thresholds: ArrayLike,
                           target_precision: float, confidence: float = 0.95,
                           method: Method = "wilson") -> np.ndarray:
    """Per distance in ``thresholds``: whether every reused label (``reused_label``) with
    pairs at ``distance <= T`` has a one-sided lower bound on its precision (share of its
    pairs that are ``same``) at or above ``target_precision``."""
    t = np.asarray(thresholds, dtype=np.float64)
    ok = np.ones(len(t), dtype=bool)
    known = pairs[pairs["reused_label"].notna()]
    for _, part in known.groupby("reused_label"):
        order = np.argsort(part["distance"].to_numpy(dtype=np.float64), kind="stable")
        dist = part["distance"].to_numpy(dtype=np.float64)[order]
        same = part["same"].astype(bool).to_numpy()[order]
        trials = np.searchsorted(dist, t, side="right")
        successes = np.concatenate([[0], np.cumsum(same)])[trials]
        clears = lower_bound_clears(successes=successes, trials=np.maximum(trials, 1),
                                    target=target_precision, confidence=confidence,
                                    method=method)
        ok &= (trials == 0) | clears
    return ok


# Reporting helpers live in their own module (they use the curves and bounds only).
from ml.calibration_report import WhatIf, curve_table, spot_check_precision, what_if  # noqa: E402
