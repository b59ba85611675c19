from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, utcnow
from backend.types import JSONType, TZDateTime

THRESHOLD_STATES = ("proposed", "active", "retired")


class ThresholdSet(Base):
    """A versioned set of thresholds used by routing.

    ``bands``: per label, the probability cut-offs of the classifier bands, e.g.
    ``{"OK": {"auto": 0.99, "good": 0.9}, "Prohibited": {"high": 0.9, "middle": 0.6}}``.
    ``reuse_distance``: the similarity reuse threshold (cosine distance).
    ``auto_decide``: which bands may decide automatically (others only route).
    ``model_id`` / ``encoder_id``: the classifier and the encoder the set was calibrated
    for; its bands decide only for that model, its reuse distance only for that encoder.
    ``backing``: per deciding cut-off (``"<label>.<cut>"``) and ``"reuse_distance"``, the
    calibration evidence behind the value (threshold, one-sided lower bound, labels, run,
    model / encoder). A cut-off without backing at its current value runs in shadow
    (``calibration/thresholds.py: band_states``).
    """

    __tablename__ = "threshold_sets"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, unique=True)
    state: Mapped[str] = mapped_column(String(20), default="proposed")
    bands: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    reuse_distance: Mapped[float | None] = mapped_column(Float)
    auto_decide: Mapped[list[str]] = mapped_column(JSONType, default=list)
    model_id: Mapped[str | None] = mapped_column(String(200))
    encoder_id: Mapped[str | None] = mapped_column(String(200))
    backing: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    calibration_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("calibration_runs.id", ondelete="SET NULL")
    )
    note: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    applied_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    applied_at: Mapped[datetime | None] = mapped_column(TZDateTime())


class CalibrationRun(Base):
    """One calibration: the frozen labelled set, the curves, the choice, the report."""

    __tablename__ = "calibration_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # classifier | similarity
    status: Mapped[str] = mapped_column(String(20), default="done")
    as_of: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    labelled_count: Mapped[int] = mapped_column(Integer, default=0)
    labelled_set: Mapped[list[Any] | None] = mapped_column(JSONType)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    message: Mapped[str | None] = mapped_column(Text)
    report_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class ModelArtifact(Base):
    """A trained classifier saved on disk, with what it was trained on."""

    __tablename__ = "model_artifacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, unique=True)
    kind: Mapped[str] = mapped_column(String(30), default="classifier")
    encoder_id: Mapped[str] = mapped_column(String(200))
    labels: Mapped[list[str]] = mapped_column(JSONType)
    train_size: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    path: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
