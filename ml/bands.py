"""Classifier probabilities + a threshold set → a band (a queue kind, or an automatic decision).

The threshold set is plain JSON-able data, stored and versioned by the backend::

    policy_kinds = {"ok": "ok", "restricted": "hide", "adult": "hide",
                    "prohibited": "bad", "fraud": "bad"}
    bands = {"ok": {"auto": 0.995, "good": 0.90},
             "restricted": {"high": 0.90, "middle": 0.60}, ...}
    auto_decide = ["auto_ok", "ML_BAD_HIGH"]

Rules, on the top label (argmax; ties go to the label listed first) and its
probability ``p``; every cut-off is inclusive (``p >= cut``):

============  ====================  ==================  ==================
label kind    ``p >= auto/high``    ``p >= good/middle``  otherwise
============  ====================  ==================  ==================
``ok``        ``auto_ok``           ``ML_GOOD``         ``None``
``bad``       ``ML_BAD_HIGH``       ``ML_BAD_MIDDLE``   ``None``
``hide``      ``ML_BAD_HIGH``       ``ML_HIDE_MIDDLE``  ``None``
============  ====================  ==================  ==================

A band decides automatically only when it is listed in ``auto_decide``; ``auto_ok``
that may not decide is routed to ``ML_GOOD`` (spot-checked) instead. ``None`` means
the classifier has no opinion worth a queue: the item falls to signal-based queues.

Label groups (``assign_bands(..., groups={"action": ["offensive", "hate"]})``): when
``bands`` holds cut-offs for ``"group:<name>"`` (``high`` / ``middle``, chosen by
calibration on the group's score, the sum of its members' probabilities), an item
whose group score reaches a group cut-off gets that group band (``ML_BAD_HIGH`` /
``ML_BAD_MIDDLE``) with its most probable member as the label and ``group`` set: the
group decides "remove vs keep", the label is the likeliest reason for people to
confirm. Items below the group's cut-offs fall to the per-label rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "BAND_KINDS",
    "BandResult",
    "assign_band",
    "assign_bands",
    "default_bands",
    "group_key",
    "validate_bands",
]

AUTO_OK = "auto_ok"
ML_GOOD = "ML_GOOD"
ML_BAD_HIGH = "ML_BAD_HIGH"
ML_BAD_MIDDLE = "ML_BAD_MIDDLE"
ML_HIDE_MIDDLE = "ML_HIDE_MIDDLE"

BAND_KINDS = (AUTO_OK, ML_GOOD, ML_BAD_HIGH, ML_BAD_MIDDLE, ML_HIDE_MIDDLE)

# kind -> ((upper cut name, band), (lower cut name, band))
_LADDERS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "ok": (("auto", AUTO_OK), ("good", ML_GOOD)),
    "bad": (("high", ML_BAD_HIGH), ("middle", ML_BAD_MIDDLE)),
    "hide": (("high", ML_BAD_HIGH), ("middle", ML_HIDE_MIDDLE)),
}

_DEFAULT_CUTS = {
    "ok": {"auto": 0.995, "good": 0.90},
    "bad": {"high": 0.90, "middle": 0.60},
    "hide": {"high": 0.90, "middle": 0.60},
}


@dataclass(frozen=True, slots=True)
class BandResult:
    """The band for one item: ``band`` (``None``: no band), the top label and its probability,
    and whether the band decides automatically."""

    band: str | None
    label: str
    probability: float
    decides: bool
    group: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_bands(policy_kinds: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """Default cut-offs per label: ok 0.995 / 0.90, bad and hide 0.90 / 0.60."""
    return {label: dict(_DEFAULT_CUTS[kind]) for label, kind in policy_kinds.items()}


def validate_bands(
    *, bands: Mapping[str, Mapping[str, float]], policy_kinds: Mapping[str, str]
) -> None:
    """Raise ``ValueError`` unless every label has its kind's two cut-offs, upper ≥ lower."""
    for label, kind in policy_kinds.items():
        if kind not in _LADDERS:
            raise ValueError(f"label {label!r}: unknown kind {kind!r}; expected ok, bad or hide")
        (upper, _), (lower, _) = _LADDERS[kind]
        cuts = bands.get(label)
        if cuts is None or upper not in cuts or lower not in cuts:
            raise ValueError(f"label {label!r} ({kind}) needs cut-offs {upper!r} and {lower!r}")
        if not 0.0 <= cuts[lower] <= cuts[upper] <= 1.0:
            raise ValueError(f"label {label!r}: need 0 <= {lower} <= {upper} <= 1, got {cuts}")


def _at_least(p: Any, cut: Any) -> Any:
    """``p >= cut`` compared in ``p``'s own float precision, so a float32 probability of
    exactly 0.9 meets a 0.9 cut-off (inclusive means inclusive)."""
    p_arr = np.asarray(p)
    dtype = p_arr.dtype if np.issubdtype(p_arr.dtype, np.floating) else np.float64
    return p_arr >= np.asarray(cut, dtype=dtype)


def _band_for(
    label: str,
    p: Any,
    *,
    bands: Mapping[str, Mapping[str, float]],
    policy_kinds: Mapping[str, str],
    auto_decide: Sequence[str],
) -> BandResult:
    kind = policy_kinds[label]
    (upper, upper_band), (lower, lower_band) = _LADDERS[kind]
    cuts = bands[label]
    band: str | None = None
    if _at_least(p, cuts[upper]):
        band = upper_band
    elif _at_least(p, cuts[lower]):
        band = lower_band
    decides = band is not None and band in auto_decide
    if band == AUTO_OK and not decides:
        band = ML_GOOD
    return BandResult(band=band, label=label, probability=float(p), decides=decides)


def assign_band(
    probs: Mapping[str, float],
    *,
    bands: Mapping[str, Mapping[str, float]],
    policy_kinds: Mapping[str, str],
    auto_decide: Sequence[str],
) -> BandResult:
    """The band for one item's label probabilities (see the module docstring for the rules)."""
    if not probs:
        raise ValueError("probs is empty")
    label = max(probs, key=lambda name: probs[name])  # first of equal maxima
    return _band_for(
        label, probs[label], bands=bands, policy_kinds=policy_kinds, auto_decide=auto_decide
    )


def group_key(name: str) -> str:
    """The ``bands`` key of a label group's cut-offs."""
    return f"group:{name}"


def assign_bands(
    proba: np.ndarray,
    labels: Sequence[str],
    *,
    bands: Mapping[str, Mapping[str, float]],
    policy_kinds: Mapping[str, str],
    auto_decide: Sequence[str],
    groups: Mapping[str, Sequence[str]] | None = None,
) -> list[BandResult]:
    """:func:`assign_band` for each row of ``proba`` (``[n, len(labels)]``, columns in
    ``labels`` order), vectorised over the argmax and the cut-off comparisons; label
    groups with cut-offs in ``bands`` first (see the module docstring)."""
    results = _assign_label_bands(proba, labels, bands=bands, policy_kinds=policy_kinds,
                                  auto_decide=auto_decide)
    for name, members in (groups or {}).items():
        cuts = bands.get(group_key(name))
        cols = [list(labels).index(m) for m in members if m in labels]
        if not cuts or not cols:
            continue
        p = np.asarray(proba, dtype=np.float64)[:, cols]
        score = p.sum(axis=1)
        top = np.asarray(cols)[p.argmax(axis=1)]
        for i, (s_i, j) in enumerate(zip(score.tolist(), top.tolist(), strict=True)):
            current = results[i]
            if current.group is not None or (current.decides and current.label not in members):
                continue  # another group took it, or a label outside the group decides it
            high, middle = cuts.get("high"), cuts.get("middle")  # None: not backed
            if high is not None and _at_least(s_i, high):
                band = ML_BAD_HIGH
            elif middle is not None and _at_least(s_i, middle):
                band = ML_BAD_MIDDLE
            else:
                continue
            results[i] = BandResult(band=band, label=labels[j], probability=s_i,
                                    decides=band in auto_decide, group=name)
    return results


def _assign_label_bands(
    proba: np.ndarray,
    labels: Sequence[str],
    *,
    bands: Mapping[str, Mapping[str, float]],
    policy_kinds: Mapping[str, str],
    auto_decide: Sequence[str],
) -> list[BandResult]:
    proba = np.asarray(proba)
    if not np.issubdtype(proba.dtype, np.floating):
        proba = proba.astype(np.float64)
    if proba.ndim != 2 or proba.shape[1] != len(labels):
        raise ValueError(f"proba must be [n, {len(labels)}], got {proba.shape}")
    top = proba.argmax(axis=1)
    p_top = proba[np.arange(len(proba)), top]
    kinds = [policy_kinds[label] for label in labels]
    upper_cut = np.array(
        [bands[lb][_LADDERS[k][0][0]] for lb, k in zip(labels, kinds, strict=True)]
    )
    lower_cut = np.array(
        [bands[lb][_LADDERS[k][1][0]] for lb, k in zip(labels, kinds, strict=True)]
    )
    level = np.where(
        _at_least(p_top, upper_cut[top]), 0, np.where(_at_least(p_top, lower_cut[top]), 1, 2)
    )
    results: list[BandResult] = []
    for column, p, lvl in zip(top.tolist(), p_top.tolist(), level.tolist(), strict=True):
        band = None if lvl == 2 else _LADDERS[kinds[column]][lvl][1]
        decides = band is not None and band in auto_decide
        if band == AUTO_OK and not decides:
            band = ML_GOOD
        results.append(BandResult(band=band, label=labels[column], probability=p, decides=decides))
    return results
