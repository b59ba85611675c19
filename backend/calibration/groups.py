"""Calibration of the policy's label groups ("remove vs keep" as a whole).

For each group of the policy (``groups: {action: [offensive, hate]}``) the group's
score (``ml.families.group_scores``: ``1 - P(ok)`` or the sum of the members) gets a
precision curve over the labelled set (positives: items whose human label is a
member) and the same lower-bound rule as a label: ``high`` (deciding target) and
``middle`` (routing target). Backed cut-offs go in the threshold set under
``bands["group:<name>"]``, which ``ml.bands.assign_bands`` applies before the
per-label bands; a cut-off that is not backed is left out (None: never reached).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from backend.policy import Policy


def calibrate_groups(*, proba: np.ndarray, labels: list[str], classes: list[str],
                     policy: Policy, cal: Any, bands: dict[str, dict[str, Any]],
                     choose: Callable[..., Any], as_dict: Callable[[Any], dict[str, Any]],
                     backing: dict[str, Any] | None = None,
                     assess: Callable[..., dict[str, Any]] | None = None,
                     weights: np.ndarray | None = None
                     ) -> tuple[dict[str, Any], list[pd.DataFrame], bool]:
    """Per group: the choices (for ``run.result["groups"]``), its curve, and whether
    anything was backed; ``bands`` gets the backed cut-offs in place. With ``backing`` and
    ``assess``, the deciding (``high``) cut-off's evidence goes to
    ``backing["group:<name>.high"]``, so the group band is live only while it holds for
    the model it was calibrated for (``backend.calibration.thresholds.band_states``).
    ``weights``: the labels' inverse sampling probabilities (weighted curves)."""
    from ml.bands import group_key
    from ml.families import group_curve

    out: dict[str, Any] = {}
    curves: list[pd.DataFrame] = []
    backed = False
    for group in policy.groups:
        members = [m for m in group.labels if m in classes]
        if not members:
            continue
        curve = group_curve(proba, labels, classes, members, ok_label=policy.ok_key,
                            score=group.score, weights=weights)  # type: ignore[arg-type]
        key = group_key(group.name)
        curves.append(curve.assign(kind="group", label=key))
        up = choose(curve, target=cal.target_precision, cal=cal, objective=cal.objective)
        low = choose(curve, target=cal.routing_target_precision, cal=cal,
                     objective="max_automation")
        current = dict(bands.get(key, {"high": None, "middle": None}))
        new = dict(current)
        if up.threshold is not None:
            new["high"] = round(float(up.threshold), 6)
        if low.threshold is not None:
            new["middle"] = round(float(low.threshold), 6)
        if new.get("high") is not None and new.get("middle") is not None:
            new["middle"] = min(new["middle"], new["high"])
        backed |= up.threshold is not None or low.threshold is not None
        if new.get("high") is not None or new.get("middle") is not None:
            bands[key] = new
        if backing is not None and assess is not None and new.get("high") is not None:
            backing[f"{key}.high"] = assess(curve=curve, value=new["high"])
        out[group.name] = {"members": members, "score": group.score, "current": current,
                           "proposed": new, "n_true": int(curve.attrs["n_positive"]),
                           "high": as_dict(up), "middle": as_dict(low)}
    return out, curves, backed
