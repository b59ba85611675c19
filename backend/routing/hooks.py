"""The hook protocol the pipeline calls after the rules, and its outcome types.

``routing/`` owns this protocol; the ML adapter (``backend/ml_adapter/hooks.py``)
implements it. Routing never imports the adapter: the default hooks are found through
``DEFAULT_HOOKS_FACTORY`` on first use, and ``set_pipeline_hooks`` replaces them.

Each hook takes the batch of items still undecided after the rules (plain dicts of
their columns, with ``id``) and returns an outcome per item id it has something to
say about. The default hooks say nothing, so the pipeline falls through to the
signal-based queues.

Shadow: an outcome whose threshold is not backed by calibration (``live=False`` for
similarity, ``shadow`` set for the classifier) never decides; the pipeline records what
it would have decided (``routing.models.ShadowOutcome``) and routes the item to people.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

#: ``module:function`` returning the hooks used when none were set: the ML hooks when
#: ``QUORUM_ML_ENABLED``, else the no-ops.
DEFAULT_HOOKS_FACTORY = "backend.ml_adapter.hooks:default_hooks"


@dataclass(frozen=True)
class SimilarityOutcome:
    kind: str  # "reuse" | "conflict"
    label: str | None
    neighbour_id: int | None
    distance: float | None
    threshold_set_version: int | None
    details: dict[str, Any] = field(default_factory=dict)
    #: False: the reuse distance is not backed (shadow): record, do not decide or route.
    live: bool = True
    #: why it is not live, in a sentence
    reason: str | None = None
    encoder_id: str | None = None


@dataclass(frozen=True)
class ClassifierOutcome:
    band: str | None  # auto_ok | ML_GOOD | ML_BAD_HIGH | ML_BAD_MIDDLE | ML_HIDE_MIDDLE | None
    label: str
    probability: float
    decides: bool
    model_id: str
    threshold_set_version: int | None
    scores: dict[str, float] = field(default_factory=dict)
    #: The band that would have decided when it runs in shadow (then ``decides`` is False
    #: and ``band`` is the queue the item goes to); None when not in shadow.
    shadow: str | None = None
    reason: str | None = None
    encoder_id: str | None = None
    #: the deciding cut-off the probability was compared with
    cut: float | None = None


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
    """The hooks set with ``set_pipeline_hooks``; else what ``DEFAULT_HOOKS_FACTORY``
    makes (a fresh object per call: hooks keep per-batch state)."""
    if _hooks is not None:
        return _hooks
    module, _, name = DEFAULT_HOOKS_FACTORY.partition(":")
    factory = getattr(importlib.import_module(module), name)
    return factory()
