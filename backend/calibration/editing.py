"""Editing a threshold set by hand: a new *proposed* version, validated, its backing
re-checked against the calibration curves behind it.

Sets are versions: an edit never changes a stored set. A changed deciding cut-off keeps
its backing only where the curve of the run that backed the old value backs the new
value too (the one-sided lower bound read at the new value still clears the target);
otherwise the edited band runs in shadow until the next calibration run. A reuse
distance is re-checked the same way on its similarity run's curve.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from backend.calibration import service as calibration
from backend.calibration import thresholds
from backend.calibration.models import ThresholdSet
from backend.errors import NotFound, ValidationFailed
from backend.policy import Policy

_UNSET: Any = object()


def _recheck(session: Session, *, old: dict[str, Any] | None, value: float | None,
             label: str | None) -> dict[str, Any] | None:
    """The backing of ``value`` read from the run that backed the old value, or None."""
    if not old or value is None or old.get("run_id") is None:
        return None
    run = calibration.get_run(session=session, run_id=int(old["run_id"]))
    try:
        curve = calibration.run_curve(run, label)
    except NotFound:  # the run's files are gone: nothing to re-check on
        return None
    if curve.empty:
        return None
    bound = {k: old[k] for k in ("model_id", "encoder_id") if k in old}
    return thresholds.assess(curve=curve, value=value, target=float(old["target"]),
                             confidence=float(old["confidence"]), method=str(old["method"]),
                             run_id=run.id, **bound)


def edit_set(*, session: Session, policy: Policy, version: int,
             cuts: dict[str, float] | None = None, reuse_distance: Any = _UNSET,
             auto_decide: list[str] | None = None, note: str | None = None,
             user_id: int | None = None) -> ThresholdSet:
    """A new proposed set from ``version`` with ``cuts`` (``{"<label>.<cut>": value}``),
    ``reuse_distance`` (a float, or None to switch reuse off) and ``auto_decide``
    changed. Raises ``ValidationFailed`` with a sentence on anything invalid."""
    src = thresholds.get_version(session=session, version=version)
    bands = {lab: dict(c) for lab, c in src.bands.items()}
    kinds = thresholds.class_kinds(policy)
    backing = dict(src.backing or {})
    for key, value in (cuts or {}).items():
        label, _, cut = key.partition(".")
        if label not in kinds:
            raise ValidationFailed(f"{key!r}: {label!r} is not a policy label; labels are "
                                   f"{sorted(kinds)}")
        if cut not in bands.get(label, {}):
            raise ValidationFailed(f"{key!r}: {label} has cut-offs "
                                   f"{sorted(bands.get(label, {}))}")
        try:
            value = float(value)
        except (TypeError, ValueError) as exc:
            raise ValidationFailed(f"{key!r}: {value!r} is not a number") from exc
        bands[label][cut] = value
        if key in backing and not thresholds._same(backing[key].get("threshold"), value):
            rechecked = _recheck(session, old=backing[key], value=value, label=label)
            if rechecked is None:
                backing.pop(key)
            else:
                backing[key] = rechecked
    reuse = src.reuse_distance if reuse_distance is _UNSET else reuse_distance
    if reuse is not None:
        try:
            reuse = float(reuse)
        except (TypeError, ValueError) as exc:
            raise ValidationFailed(f"reuse distance {reuse!r} is not a number") from exc
    old_reuse = backing.get(thresholds.REUSE_KEY)
    if old_reuse and not thresholds._same(old_reuse.get("threshold"), reuse):
        rechecked = _recheck(session, old=old_reuse, value=reuse, label=None)
        if rechecked is None:
            backing.pop(thresholds.REUSE_KEY)
        else:
            backing[thresholds.REUSE_KEY] = rechecked
    changed = (bands != src.bands or reuse != src.reuse_distance
               or (auto_decide is not None and list(auto_decide) != list(src.auto_decide)))
    if not changed:
        raise ValidationFailed(f"nothing to change: the edit leaves threshold set v{version} "
                               "as it is")
    return thresholds.propose(
        session=session, policy=policy, bands=bands, reuse_distance=reuse,
        auto_decide=list(src.auto_decide if auto_decide is None else auto_decide),
        calibration_run_id=src.calibration_run_id, user_id=user_id,
        note=note or f"edited from v{version}", model_id=src.model_id,
        encoder_id=src.encoder_id, backing=backing)
