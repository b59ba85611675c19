"""What the analyst reads: what-if on today's scores, spot checks, threshold tables.

Re-exported by :mod:`ml.calibration`. No plotting here: the backend report draws.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from ml.calibration_bounds import Method, proportion_bounds
from ml.calibration_curves import counts_at, curve_direction

REST_BAND = "rest"


@dataclass(frozen=True)
class WhatIf:
    """Expected effect of thresholds on today's items (see :func:`what_if`).

    ``bands``: one row per band, strictest first, then ``"rest"``; columns
    ``band`` (str), ``threshold`` (float, NaN for rest), ``auto`` (bool: decided
    automatically), ``n_items`` (today's items in the band), ``share`` (of today's),
    ``labelled_n`` (labelled items in the band), ``precision`` (share of positives
    among those labelled items: the band's precision; for a routed band, what people
    will find there), ``precision_lower`` / ``precision_upper`` (two-sided interval at
    ``confidence``), ``expected_positive`` (``n_items * precision``), ``n_routed``
    (``n_items`` if routed to people else 0), ``crowd_cost``
    (``cost_per_item * overlap * n_routed``).
    Totals: ``auto_precision`` and its interval pool the labelled items of all
    automatic bands; ``expected_auto_errors`` sums ``n_items * (1 - precision)`` over
    automatic bands.
    """

    bands: pd.DataFrame
    n_items: int
    n_auto: int
    n_routed: int
    auto_precision: float | None
    auto_precision_lower: float | None
    auto_precision_upper: float | None
    expected_auto_errors: float | None
    crowd_cost: float
    confidence: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        """Plain values; ``bands`` as a list of records."""
        out = asdict(self)
        out["bands"] = self.bands.to_dict(orient="records")
        return out


def _nan_to_none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def what_if(
    *,
    scores: ArrayLike,
    curve: pd.DataFrame,
    thresholds: float | Mapping[str, float],
    auto_bands: Collection[str] | None = None,
    confidence: float = 0.95,
    method: Method = "wilson",
    cost_per_item: float = 0.0,
    overlap: int = 1,
) -> WhatIf:
    """Queue sizes, automation and expected precision if ``thresholds`` ran on ``scores``.

    ``scores``: today's items' scores (same kind as the curve: probabilities under
    ``"ge"``, distances under ``"le"``). ``curve``: a labelled curve built on all
    distinct scores (:func:`ml.calibration.binary_curve`), read with ``counts_at``.
    ``thresholds``: one threshold (a single band ``"auto"``, decided automatically)
    or ``{band: threshold}``; an item belongs to the strictest band it passes
    (``>=`` under ``"ge"``, ``<=`` under ``"le"``), items passing none to ``"rest"``.
    ``auto_bands``: bands decided automatically (default: the strictest band only);
    all other bands, and rest, are routed to people at
    ``cost_per_item * overlap`` each.
    """
    direction = curve_direction(curve)
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    bands = (
        {"auto": float(thresholds)}
        if not isinstance(thresholds, Mapping)
        else {str(k): float(v) for k, v in thresholds.items()}
    )
    if not bands:
        raise ValueError("need at least one threshold")
    names = sorted(bands, key=lambda b: -bands[b] if direction == "ge" else bands[b])
    auto = set(names[:1]) if auto_bands is None else set(auto_bands)
    unknown = auto - set(bands)
    if unknown:
        raise ValueError(f"auto_bands not among the bands: {sorted(unknown)}")
    t = np.array([bands[b] for b in names])
    # cumulative counts: items passing each threshold (today and labelled)
    if direction == "ge":
        passing = s.size - np.searchsorted(s, t, side="left")
    else:
        passing = np.searchsorted(s, t, side="right")
    labelled = counts_at(curve, thresholds=t)
    cum = np.concatenate([[0], passing, [s.size]])
    n_labelled = int(labelled["n_auto"].iloc[0] + labelled["n_routed"].iloc[0])
    n_pos = int(labelled["tp"].iloc[0] + labelled["fn"].iloc[0])
    cum_lab = np.concatenate([[0], labelled["n_auto"].to_numpy(), [n_labelled]])
    cum_tp = np.concatenate([[0], labelled["tp"].to_numpy(), [n_pos]])
    n_items = np.diff(cum)
    # a weighted curve (inverse-probability weights) has effective counts: the bands'
    # differences are then an approximation of each band's effective size, kept >= 0
    lab_n = np.maximum(np.diff(cum_lab), 0)
    lab_tp = np.clip(np.diff(cum_tp), 0, lab_n)
    lower, upper = proportion_bounds(
        successes=lab_tp, trials=lab_n, confidence=confidence, method=method, sided="two"
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(lab_n > 0, lab_tp / np.maximum(lab_n, 1), np.nan)
    names_all = [*names, REST_BAND]
    is_auto = np.array([b in auto for b in names_all])
    routed = np.where(is_auto, 0, n_items)
    table = pd.DataFrame(
        {
            "band": names_all,
            "threshold": np.append(t, np.nan),
            "auto": is_auto,
            "n_items": n_items.astype(np.int64),
            "share": n_items / s.size if s.size else np.full(n_items.shape, np.nan),
            "labelled_n": lab_n.astype(np.int64),
            "precision": precision,
            "precision_lower": lower,
            "precision_upper": upper,
            "expected_positive": n_items * precision,
            "n_routed": routed.astype(np.int64),
            "crowd_cost": cost_per_item * overlap * routed,
        }
    )
    auto_n, auto_tp = int(lab_n[is_auto].sum()), int(lab_tp[is_auto].sum())
    a_lo, a_hi = proportion_bounds(
        successes=auto_tp, trials=auto_n, confidence=confidence, method=method, sided="two"
    )
    errors = n_items[is_auto] * (1.0 - precision[is_auto])
    return WhatIf(
        bands=table,
        n_items=int(s.size),
        n_auto=int(n_items[is_auto].sum()),
        n_routed=int(routed.sum()),
        auto_precision=auto_tp / auto_n if auto_n else None,
        auto_precision_lower=_nan_to_none(float(a_lo)),
        auto_precision_upper=_nan_to_none(float(a_hi)),
        expected_auto_errors=None if np.isnan(errors).any() else float(errors.sum()),
        crowd_cost=float(table["crowd_cost"].sum()),
        confidence=confidence,
        method=method,
    )


def spot_check_precision(
    checks: pd.DataFrame,
    *,
    target_precision: float | Mapping[str, float],
    confidence: float = 0.95,
    method: Method = "wilson",
) -> pd.DataFrame:
    """Measured precision of automatic decisions, per band, from human spot checks.

    Input columns: ``band`` (str), ``auto_label`` (what the automation decided),
    ``human_label`` (the spot checker's verdict; rows where it is missing are
    ignored), optionally ``weight`` (``1 / sampling probability`` of the check: pooling
    bands checked at different rates into one row weighs each check by the items it
    stands for). ``target_precision``: one target, or ``{band: target}``.

    Output, one row per band (sorted): ``band``, ``n`` (checked), ``agreements``
    (``auto_label == human_label``), ``precision`` (agreements / n; weighted:
    ``sum(w * agree) / sum(w)``), ``n_effective`` (the sample size the interval rests
    on: ``n``, or Kish's ``sum(w)**2 / sum(w**2)`` with weights), ``precision_lower``
    / ``precision_upper`` (two-sided interval at ``confidence``, ``method``),
    ``target``, ``below_target`` (the upper bound is below the target: the data
    shows the band misses it) and ``unproven`` (the lower bound is below the target:
    the data cannot yet show the band meets it).
    """
    missing = {"band", "auto_label", "human_label"} - set(checks.columns)
    if missing:
        raise ValueError(f"checks lacks columns {sorted(missing)}")
    done = checks[checks["human_label"].notna()]
    agree = (done["auto_label"] == done["human_label"]).astype(np.int64)
    if "weight" in done.columns:
        w = done["weight"].astype(np.float64)
        if not np.all(np.isfinite(w)) or (w <= 0).any():
            raise ValueError("weights must be positive and finite (1 / sampling probability)")
    else:
        w = pd.Series(1.0, index=done.index)
    grouped = agree.groupby(done["band"])
    out = pd.DataFrame({"n": grouped.size(), "agreements": grouped.sum()}).reset_index()
    out["n"] = out["n"].astype(np.int64)
    out["agreements"] = out["agreements"].astype(np.int64)
    frame = pd.DataFrame({"band": done["band"], "w": w, "wa": w * agree, "w2": w * w})
    sums = frame.groupby("band")[["w", "wa", "w2"]].sum().reindex(out["band"])
    precision = (sums["wa"] / sums["w"]).to_numpy()
    n_eff = (sums["w"] ** 2 / sums["w2"]).to_numpy()
    lower, upper = proportion_bounds(
        successes=precision * n_eff,
        trials=n_eff,
        confidence=confidence,
        method=method,
        sided="two",
    )
    out["precision"] = precision
    out["n_effective"] = n_eff
    out["precision_lower"] = lower
    out["precision_upper"] = upper
    if isinstance(target_precision, Mapping):
        out["target"] = out["band"].map(target_precision).astype(np.float64)
    else:
        out["target"] = float(target_precision)
    out["below_target"] = out["precision_upper"] < out["target"]
    out["unproven"] = out["precision_lower"] < out["target"]
    return out


def _percent(value: float, digits: int) -> str:
    return "undefined" if np.isnan(value) else f"{value:.{digits}%}"


def curve_table(
    curve: pd.DataFrame,
    *,
    thresholds: ArrayLike,
    as_text: bool = False,
    digits: int = 0,
) -> pd.DataFrame:
    """The seed's threshold table: a few thresholds, in the order given.

    Columns: ``threshold``, ``precision``, ``recall``, ``accuracy``, ``n_auto``,
    ``n_routed``. Floats (NaN = undefined) unless ``as_text``, then the three rates
    are strings such as ``"50%"`` or ``"undefined"`` (``digits`` decimals).
    """
    rows = counts_at(curve, thresholds=thresholds)[
        ["threshold", "precision", "recall", "accuracy", "n_auto", "n_routed"]
    ].copy()
    if as_text:
        for column in ("precision", "recall", "accuracy"):
            rows[column] = [_percent(v, digits) for v in rows[column].to_numpy()]
    return rows.reset_index(drop=True)
