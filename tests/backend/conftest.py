"""Fixtures for the backend tests that switch the ML hooks on."""

from __future__ import annotations

import pytest

from backend.db import utcnow
from backend.decisions.service import NewDecision, record_decisions
from backend.items.service import ingest
from backend.routing.pipeline import route_items


@pytest.fixture
def ml_on(settings, monkeypatch):  # noqa: ANN001, ANN201
    """ML hooks on with the fast, weightless ``hashing`` encoder and an exact index."""
    from backend.calibration.settings import get_calibration_settings
    from backend.ml_adapter import service
    from backend.ml_adapter.settings import get_ml_settings

    monkeypatch.setenv("QUORUM_ML_ENABLED", "true")
    monkeypatch.setenv("QUORUM_ML_ENCODER", "hashing")
    monkeypatch.setenv("QUORUM_ML_INDEX_KIND", "exact")
    monkeypatch.setenv("QUORUM_ML_MIN_TRAIN_VERDICTS", "20")
    monkeypatch.setenv("QUORUM_ML_DEFAULT_REUSE_DISTANCE", "0.1")

    def reset() -> None:
        get_ml_settings.cache_clear()
        get_calibration_settings.cache_clear()
        service._stores.clear()
        service._classifiers.clear()

    reset()
    yield get_ml_settings()
    reset()


def route_rows(session, settings, policy, rows):  # noqa: ANN001, ANN201
    """Ingest ``rows`` and route the new items; returns (ids, routing summary)."""
    now = utcnow()
    _, ids = ingest(session=session, rows=rows, policy=policy, now=now)
    summary = route_items(session=session, item_ids=ids, now=now, settings=settings)
    session.flush()
    return ids, summary


def human_verdict(session, item_id: int, label: str) -> None:  # noqa: ANN001
    record_decisions(session=session, decisions=[
        NewDecision(item_id=item_id, label=label, source="moderator")])
