"""Choosing a Hamming distance for PDQ matches by precision, with a confidence bound.

A match at distance ``d`` is *right* when the matched image's verdict (a bank's label,
or a past item's human label) is the verdict people gave the query item. For every
cut-off ``D`` the matches at ``d <= D`` are the automatic ones; the chosen distance is
the largest ``D`` whose one-sided lower confidence bound on precision clears the target
(``ml.calibration_bounds``), so the bound says how many labels it rests on.

DataFrame contract of :func:`distance_curve`: ``distance`` (0..max), ``n_auto`` (matches
within it), ``tp`` (right ones), ``precision`` (NaN where ``n_auto == 0``), ``lower``
(one-sided bound).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ml.calibration_bounds import proportion_bounds

__all__ = ["choose_distance", "distance_curve"]


def distance_curve(distances: Sequence[int] | np.ndarray, right: Sequence[bool] | np.ndarray,
                   *, max_distance: int = 64, confidence: float = 0.95,
                   method: str = "wilson") -> pd.DataFrame:
    """Per cut-off ``0..max_distance``: matches within it, right ones, precision, bound.
    ``distances`` / ``right``: one entry per labelled query with a match (its nearest)."""
    d = np.asarray(distances, dtype=np.int64).reshape(-1)
    r = np.asarray(right, dtype=bool).reshape(-1)
    if len(d) != len(r):
        raise ValueError(f"{len(d)} distances for {len(r)} outcomes")
    cuts = np.arange(max_distance + 1)
    n_at = np.bincount(np.clip(d, 0, max_distance + 1), minlength=max_distance + 2)
    tp_at = np.bincount(np.clip(d, 0, max_distance + 1), weights=r.astype(float),
                        minlength=max_distance + 2)
    n_auto = np.cumsum(n_at)[: max_distance + 1]
    tp = np.cumsum(tp_at)[: max_distance + 1].round().astype(np.int64)
    lower, _ = proportion_bounds(successes=tp, trials=n_auto, confidence=confidence,
                                 method=method, sided="one")  # type: ignore[arg-type]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_auto > 0, tp / np.maximum(n_auto, 1), np.nan)
    return pd.DataFrame({"distance": cuts, "n_auto": n_auto, "tp": tp,
                         "precision": precision, "lower": lower})


def choose_distance(curve: pd.DataFrame, *, target: float, n_labelled: int,
                    fallback: int) -> dict[str, Any]:
    """The backing of the largest distance whose lower bound clears ``target``; when none
    does, the evidence at ``fallback`` with ``backed: False``."""
    ok = curve[np.nan_to_num(curve["lower"].to_numpy(dtype=float), nan=-1.0) >= target]
    backed = not ok.empty
    row = ok.iloc[-1] if backed else curve[curve["distance"] == fallback].iloc[0]
    lower = float(row["lower"])
    n_auto = int(row["n_auto"])
    return {"threshold": int(row["distance"]), "backed": backed, "target": float(target),
            "precision": float(row["tp"]) / n_auto if n_auto else None,
            "lower": None if np.isnan(lower) else lower, "n_auto": n_auto,
            "n_labelled": int(n_labelled)}
