"""Threshold sets: the active one, defaults, proposing, applying and restoring."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.calibration.models import ThresholdSet
from backend.db import utcnow
from backend.errors import NotFound, ValidationFailed
from backend.policy import Policy


def class_kinds(policy: Policy) -> dict[str, str]:
    return {k: v for k, v in policy.kinds.items() if v != "error"}


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
                      note="defaults", applied_at=utcnow())
    session.add(ts)
    session.flush()
    return ts


def _next_version(session: Session) -> int:
    return (session.scalar(select(func.max(ThresholdSet.version))) or 0) + 1


def propose(*, session: Session, policy: Policy, bands: dict, reuse_distance: float | None,
            auto_decide: list[str], calibration_run_id: int | None = None,
            note: str | None = None, user_id: int | None = None) -> ThresholdSet:
    from ml.bands import validate_bands

    try:
        validate_bands(bands=bands, policy_kinds=class_kinds(policy))
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from exc
    if reuse_distance is not None and not 0.0 <= reuse_distance <= 2.0:
        raise ValidationFailed("reuse_distance must be a cosine distance between 0 and 2")
    ts = ThresholdSet(version=_next_version(session), state="proposed", bands=bands,
                      reuse_distance=reuse_distance, auto_decide=auto_decide,
                      calibration_run_id=calibration_run_id, note=note, created_by=user_id)
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
