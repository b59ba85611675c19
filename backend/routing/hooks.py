"""The two ML hooks the pipeline calls after the rules. The ML adapter fills them.

Each hook takes the batch of items still undecided after the rules (plain dicts of
their columns, with ``id``) and returns an outcome per item id it has something to
say about. The default hooks say nothing, so the pipeline falls through to the
signal-based queues.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session


@dataclass(frozen=True)
class SimilarityOutcome:
    kind: str  # "reuse" | "conflict"
    label: str | None
    neighbour_id: int | None
    distance: float | None
    threshold_set_version: int | None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClassifierOutcome:
    band: str | None  # auto_ok | ML_GOOD | ML_BAD_HIGH | ML_BAD_MIDDLE | ML_HIDE_MIDDLE | None
    label: str
    probability: float
    decides: bool
    model_id: str
    threshold_set_version: int | None
    scores: dict[str, float] = field(default_factory=dict)


class PipelineHooks(Protocol):
    def enrich(self, *, session: Session, items: Sequence[dict[str, Any]],
               now: datetime) -> None:
        """Before the rules: add signals to the items (e.g. the image-safety score), in the
        row dicts the rules see and in the database."""
        ...

    def similarity(self, *, session: Session, items: Sequence[dict[str, Any]],
                   now: datetime) -> dict[int, SimilarityOutcome]: ...

    def classifier(self, *, session: Session, items: Sequence[dict[str, Any]],
                   now: datetime) -> dict[int, ClassifierOutcome]: ...


class NoopHooks:
    """Explicit no-ops: no extra signals, no similarity reuse, no classifier."""

    def enrich(self, *, session: Session, items: Sequence[dict[str, Any]],
               now: datetime) -> None:
        return None

    def similarity(self, *, session: Session, items: Sequence[dict[str, Any]],
                   now: datetime) -> dict[int, SimilarityOutcome]:
        return {}

    def classifier(self, *, session: Session, items: Sequence[dict[str, Any]],
                   now: datetime) -> dict[int, ClassifierOutcome]:
        return {}


_hooks: PipelineHooks | None = None


def set_pipeline_hooks(hooks: PipelineHooks | None) -> None:
    global _hooks
    _hooks = hooks


def get_pipeline_hooks() -> PipelineHooks:
    """The hooks set with ``set_pipeline_hooks``; else the ML hooks when ``QUORUM_ML_ENABLED``
    (a fresh object per call: hooks keep per-batch state), else the no-ops."""
    if _hooks is not None:
        return _hooks
    from backend.ml_adapter.settings import get_ml_settings

    if get_ml_settings().enabled:
        from backend.ml_adapter.service import MLHooks

        return MLHooks()
    return NoopHooks()
