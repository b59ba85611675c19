"""Threshold sets: the active one, defaults, proposing, editing, applying and restoring,
and which band is live, in shadow or off.

Safe by default: a deciding cut-off (``auto`` of an ok label, ``high`` of a bad / hide
label) or the reuse distance decides automatically only when it is **live**: listed in
``auto_decide`` (the reuse distance: set) *and* backed at its current value by a
calibration run (one-sided lower confidence bound on precision >= the target) for the
model / encoder that routing uses. Otherwise it runs in **shadow** (the pipeline records
what it would have decided and the item goes to people) or is **off** (not in
``auto_decide`` / no reuse distance). The default set has no backing: a fresh install
decides nothing automatically but by rules.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.calibration.models import ThresholdSet
from backend.db import utcnow
from backend.errors import NotFound, ValidationFailed
from backend.policy import Policy

#: kind -> (deciding cut name, deciding band); as ``ml.bands``.
DECIDING = {"ok": ("auto", "auto_ok"), "bad": ("high", "ML_BAD_HIGH"),
            "hide": ("high", "ML_BAD_HIGH")}
REUSE_KEY = "reuse_distance"
STATES = ("live", "shadow", "off")


def class_kinds(policy: Policy) -> dict[str, str]:
    return {k: v for k, v in policy.kinds.items() if v != "error"}


@dataclass(frozen=True)
class BandState:
    """Whether one deciding cut-off (or the reuse distance) decides, and the bound behind
    it: ``state`` is ``live``, ``shadow`` or ``off``; ``reason`` says why in a sentence."""

    key: str  # "<label>.<cut>" or "reuse_distance"
    label: str | None
    band: str  # auto_ok | ML_BAD_HIGH | reuse
    value: float | None
    state: str
    reason: str
    lower: float | None = None
    precision: float | None = None
    n_auto: int | None = None
    n_labelled: int | None = None
    target: float | None = None
    run_id: int | None = None
    bound_to: str | None = None  # the model (bands) or encoder (reuse) it was backed for
    #: weighted calibration: the effective sample size the bound rests on (Kish)
    n_effective: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _same(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(float(a), float(b),
                                                            rel_tol=0, abs_tol=1e-9)


def _state(*, key: str, label: str | None, band: str, value: float | None, enabled: bool,
           backing: dict[str, Any] | None, bound: str | None, bound_name: str,
           off_reason: str) -> BandState:
    info: dict[str, Any] = {}
    if backing:
        info = {"lower": backing.get("lower"), "precision": backing.get("precision"),
                "n_auto": backing.get("n_auto"), "n_labelled": backing.get("n_labelled"),
                "target": backing.get("target"), "run_id": backing.get("run_id"),
                "bound_to": backing.get(bound_name), "n_effective": backing.get("n_effective")}
    base = {"key": key, "label": label, "band": band, "value": value, **info}
    if not enabled:
        return BandState(**base, state="off", reason=off_reason)
    if not backing:
        return BandState(**base, state="shadow",
                         reason="no calibration run has backed it yet")
    if not _same(backing.get("threshold"), value):
        return BandState(**base, state="shadow",
                         reason=f"changed from the backed value {backing.get('threshold')}: "
                                "calibrate again")
    if not backing.get("backed"):
        lower = backing.get("lower")
        return BandState(**base, state="shadow", reason=(
            f"not backed: lower bound {'undefined' if lower is None else f'{lower:.2%}'} "
            f"< target {backing.get('target'):.0%} on {backing.get('n_auto') or 0} of "
            f"{backing.get('n_labelled') or 0} labels{_effective(backing)}"))
    if bound is not None and backing.get(bound_name) != bound:
        return BandState(**base, state="shadow", reason=(
            f"backed for {backing.get(bound_name)}, not for {bound}: calibrate "
            f"{'the new model' if bound_name == 'model_id' else 'with this encoder'}"))
    return BandState(**base, state="live", reason=(
        f"backed: lower bound {backing.get('lower'):.2%} >= target "
        f"{backing.get('target'):.0%} on {backing.get('n_auto')} of "
        f"{backing.get('n_labelled')} labels{_effective(backing)}"))


def _effective(backing: dict[str, Any]) -> str:
    """``" (effective sample size N, weighted ...)"`` where the bound came from a weighted
    curve whose effective size differs from the label count."""
    n_eff = backing.get("n_effective")
    if n_eff is None or math.isclose(float(n_eff), float(backing.get("n_auto") or 0),
                                     abs_tol=0.5):
        return ""
    return (f" (effective sample size {float(n_eff):.0f}: labels weighted by their "
            "sampling probability)")


def band_states(ts: ThresholdSet, *, policy: Policy, model_id: str | None = None,
                encoder_id: str | None = None) -> list[BandState]:
    """Per deciding band of ``ts`` (and the reuse distance): live, shadow or off.

    ``model_id`` / ``encoder_id``: what routing uses now (the bands are live only for the
    model they were backed for, the reuse distance only for its encoder); None checks the
    set on its own (as listed, before knowing the model)."""
    backing = ts.backing or {}
    out = []
    for label, kind in class_kinds(policy).items():
        cut, band = DECIDING[kind]
        key = f"{label}.{cut}"
        out.append(_state(key=key, label=label, band=band,
                          value=(ts.bands.get(label) or {}).get(cut),
                          enabled=band in (ts.auto_decide or []), backing=backing.get(key),
                          bound=model_id, bound_name="model_id",
                          off_reason=f"{band} is not in the set's auto-decide list"))
    for group in getattr(policy, "groups", ()) or ():  # label groups decide as ML_BAD_HIGH
        key = f"group:{group.name}"
        value = (ts.bands.get(key) or {}).get("high")
        if value is None:
            continue
        out.append(_state(key=f"{key}.high", label=key, band="ML_BAD_HIGH", value=value,
                          enabled="ML_BAD_HIGH" in (ts.auto_decide or []),
                          backing=backing.get(f"{key}.high"), bound=model_id,
                          bound_name="model_id",
                          off_reason="ML_BAD_HIGH is not in the set's auto-decide list"))
    out.append(_state(key=REUSE_KEY, label=None, band="reuse", value=ts.reuse_distance,
                      enabled=ts.reuse_distance is not None, backing=backing.get(REUSE_KEY),
                      bound=encoder_id, bound_name="encoder_id",
                      off_reason="the set has no reuse distance"))
    return out


def live_map(ts: ThresholdSet, *, policy: Policy, model_id: str | None = None,
             encoder_id: str | None = None) -> dict[str, BandState]:
    """``band_states`` keyed by label (deciding bands) and ``"reuse_distance"``."""
    return {(s.label or REUSE_KEY): s for s in band_states(
        ts, policy=policy, model_id=model_id, encoder_id=encoder_id)}


def assess(*, curve: Any, value: float, target: float, confidence: float, method: str,
           run_id: int | None, **bound: Any) -> dict[str, Any]:
    """The evidence a calibration curve gives for one cut-off ``value``: the curve read at
    ``value``, the one-sided lower bound on precision, and whether it clears ``target``."""
    from ml.calibration import counts_at, is_weighted, lower_bound_clears, proportion_bounds

    row = counts_at(curve, thresholds=[value]).iloc[0]
    weighted = is_weighted(curve)
    if weighted:  # effective counts (inverse-probability weights): the bound's sample size
        tp, n_auto = float(row["tp"]), float(row["n_auto"])
    else:
        tp, n_auto = int(row["tp"]), int(row["n_auto"])
    lower, _ = proportion_bounds(successes=tp, trials=n_auto, confidence=confidence,
                                 method=method, sided="one")  # type: ignore[arg-type]
    lower = float(lower)
    backed = bool(n_auto > 0 and lower_bound_clears(
        successes=[tp], trials=[n_auto], target=target, confidence=confidence,
        method=method)[0])  # type: ignore[arg-type]
    out = {"threshold": float(value), "backed": backed, "target": float(target),
           "precision": tp / n_auto if n_auto else None,
           "lower": None if math.isnan(lower) else lower, "n_auto": n_auto,
           "n_labelled": int(row["n_auto"] + row["n_routed"]), "confidence": confidence,
           "method": method, "run_id": run_id, **bound}
    if weighted:
        out.update(n_auto=int(row["labels_auto"]), n_effective=round(n_auto, 2),
                   weight_auto=round(float(row["weight_auto"]), 2),
                   n_labelled=int(curve.attrs.get("n_positive", 0)
                                  + curve.attrs.get("n_negative", 0)))
    return out


def default_threshold_set(*, policy: Policy, auto_decide: list[str],
                          reuse_distance: float) -> dict:
    from ml.bands import default_bands

    return {"bands": default_bands(class_kinds(policy)), "auto_decide": list(auto_decide),
            "reuse_distance": reuse_distance}


def active_threshold_set(*, session: Session, policy: Policy) -> ThresholdSet:
    """The active set; the first call creates version 1 from the defaults."""
    ts = session.scalar(select(ThresholdSet).where(ThresholdSet.state == "active")
                        .order_by(ThresholdSet.version.desc()).limit(1))
    if ts is not None:
        return ts
    from backend.ml_adapter.settings import get_ml_settings

    ml = get_ml_settings()
    data = default_threshold_set(policy=policy, auto_decide=ml.auto_decide_bands,
                                 reuse_distance=ml.default_reuse_distance)
    ts = ThresholdSet(version=_next_version(session), state="active", bands=data["bands"],
                      auto_decide=data["auto_decide"], reuse_distance=data["reuse_distance"],
                      backing={}, note="defaults: nothing backed, every band in shadow",
                      applied_at=utcnow())
    session.add(ts)
    session.flush()
    return ts


def _next_version(session: Session) -> int:
    return (session.scalar(select(func.max(ThresholdSet.version))) or 0) + 1


def propose(*, session: Session, policy: Policy, bands: dict, reuse_distance: float | None,
            auto_decide: list[str], calibration_run_id: int | None = None,
            note: str | None = None, user_id: int | None = None,
            model_id: str | None = None, encoder_id: str | None = None,
            backing: dict[str, Any] | None = None) -> ThresholdSet:
    """A new proposed set. ``backing`` is the calibration evidence per cut-off (see
    ``assess``); without it every deciding band of the set runs in shadow."""
    from ml.bands import BAND_KINDS, validate_bands

    try:
        validate_bands(bands=bands, policy_kinds=class_kinds(policy))
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from exc
    if reuse_distance is not None and not 0.0 <= reuse_distance <= 2.0:
        raise ValidationFailed("reuse_distance must be a cosine distance between 0 and 2")
    unknown = [b for b in auto_decide if b not in BAND_KINDS]
    if unknown:
        raise ValidationFailed(f"unknown bands in auto_decide: {unknown}; bands are "
                               f"{list(BAND_KINDS)}")
    ts = ThresholdSet(version=_next_version(session), state="proposed", bands=bands,
                      reuse_distance=reuse_distance, auto_decide=list(auto_decide),
                      calibration_run_id=calibration_run_id, note=note, created_by=user_id,
                      model_id=model_id, encoder_id=encoder_id, backing=dict(backing or {}))
    session.add(ts)
    session.flush()
    return ts


def get_version(*, session: Session, version: int) -> ThresholdSet:
    ts = session.scalar(select(ThresholdSet).where(ThresholdSet.version == version))
    if ts is None:
        raise NotFound(f"no threshold set version {version}")
    return ts


def apply(*, session: Session, version: int, user_id: int | None = None,
          now: datetime | None = None) -> ThresholdSet:
    """Make ``version`` the active set (a proposed one, or a retired one to restore it)."""
    ts = get_version(session=session, version=version)
    if ts.state == "active":
        return ts
    for other in session.scalars(select(ThresholdSet).where(ThresholdSet.state == "active")):
        other.state = "retired"
    ts.state = "active"
    ts.applied_by = user_id
    ts.applied_at = now or utcnow()
    session.flush()
    return ts


def list_sets(*, session: Session) -> list[ThresholdSet]:
    return list(session.scalars(select(ThresholdSet).order_by(ThresholdSet.version.desc())))


def unbacked_changes(ts: ThresholdSet, *, active: ThresholdSet,
                     policy: Policy) -> list[BandState]:
    """The deciding bands (and the reuse distance) of ``ts`` that are switched on, differ
    from ``active`` and are not backed (they would run in shadow): what makes a proposal
    *unbacked*. An unchanged band keeps whatever state it had."""
    before = {s.key: s for s in band_states(active, policy=policy)}
    out = []
    for st in band_states(ts, policy=policy):
        old = before.get(st.key)
        if st.state != "shadow":
            continue
        if old is not None and _same(old.value, st.value) and old.state != "live":
            continue
        out.append(st)
    return out


def apply_set(*, session: Session, policy: Policy, version: int, user: Any = None,
              via: str, actor: str | None = None, require_backed: bool = False,
              now: datetime | None = None) -> tuple[ThresholdSet, int]:
    """``apply`` plus its audit entry (``thresholds.apply`` for a proposal,
    ``thresholds.restore`` for an earlier set): the way the web, the API, the CLI and the
    demo make a set active (the schedule audits its own ``thresholds.auto_apply``);
    applying the active set changes nothing.
    ``require_backed``: refuse a *proposal* with an unbacked change (``unbacked_changes``)
    with a sentence; restoring an earlier set is a rollback and is never refused.
    Returns the set and the version it replaced."""
    from backend.errors import Conflict
    from backend.users.service import audit

    active = active_threshold_set(session=session, policy=policy)
    ts = get_version(session=session, version=version)
    if ts.state == "active":  # nothing changes: nothing to audit (idempotent)
        return ts, ts.version
    restore = ts.state == "retired"
    if require_backed and not restore:
        bad = unbacked_changes(ts, active=active, policy=policy)
        if bad:
            raise Conflict(refusal_sentence(ts, bad))
    previous = active.version
    apply(session=session, version=version, user_id=getattr(user, "id", None), now=now)
    details: dict[str, Any] = {"previous": previous, "via": via}
    if actor:
        details["actor"] = actor
    audit(session=session, user=user, action="thresholds.restore" if restore
          else "thresholds.apply", target_type="threshold_set", target_id=version,
          details=details)
    return ts, previous


def refusal_sentence(ts: ThresholdSet, bad: list[BandState]) -> str:
    what = "; ".join(f"{st.key} {st.value:g} ({st.reason})" if st.value is not None
                     else f"{st.key} ({st.reason})" for st in bad)
    return (f"Threshold set v{ts.version} is not backed and was not applied: {what}. "
            "Applying it would put these bands in shadow; calibrate again (more labels) or "
            "edit the set to a backed value.")
