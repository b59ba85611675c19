"""Calibration weighs labels by their sampling probability (issue 12: unbiased estimates)."""

from __future__ import annotations

import numpy as np
import pytest

from backend.calibration.service import run_calibration, sampling_probabilities
from backend.imports.service import import_verdicts
from ml.calibration import effective_size
from tests.backend.conftest import route_rows
from tests.conftest import item_row


def _history(n_spot: int, n_routed: int) -> list[dict[str, object]]:
    rows = []
    for i in range(n_spot + n_routed):
        label = "prohibited" if i % 3 == 0 else "ok"
        title = ("pistol ammo" if label == "prohibited" else "lamp chair") + f" {i}"
        row = {**item_row(i, title=title, description=""), "label": label}
        if i < n_spot:  # decided automatically, labelled only through a 5 % spot check
            row["sampling_probability"] = 0.05
        rows.append(row)
    return rows


def test_calibration_weighs_spot_checked_labels_and_says_what_the_bound_rests_on(
        session, settings, policy, ml_on):
    from backend.ml_adapter.service import train

    res = import_verdicts(session=session, rows=_history(40, 80), policy=policy)
    assert res.decisions == 120
    train(session=session)
    run = run_calibration(session=session, overrides={"target_precision": 0.6})
    w = run.result["weighting"]
    weights = np.array([20.0] * 40 + [1.0] * 80)
    assert w["weighted"] is True and w["n_labels"] == 120
    assert w["by_probability"] == {"0.05": 40, "1": 80}
    assert w["estimated_items"] == pytest.approx(880.0)
    assert w["n_effective"] == pytest.approx(effective_size(weights), abs=0.01)
    # the threshold's backing is on the effective sample size, below the label count
    backed = [b for b in run.result["labels"].values() if b["backing"].get("n_effective")]
    assert backed, run.result["messages"]
    for b in backed:
        assert b["backing"]["n_effective"] <= b["backing"]["n_auto"]
    from backend.calibration.service import read_frame

    scores = read_frame(run, "scores")
    assert sorted(scores["sampling_probability"].unique().tolist()) == [0.05, 1.0]


def test_unweighted_history_calibrates_as_before(session, settings, policy, ml_on):
    import_verdicts(session=session, rows=_history(0, 60), policy=policy)
    from sqlalchemy import select

    from backend.items.models import Item

    ids = sorted(int(i) for i in session.scalars(select(Item.id)))
    assert sampling_probabilities(session=session, ids=ids).tolist() == [1.0] * 60
    run = run_calibration(session=session)
    assert run.result["weighting"]["weighted"] is False
    assert run.result["weighting"]["n_effective"] == pytest.approx(60.0)


def test_a_spot_check_verdict_carries_its_rate(session, settings, policy, monkeypatch):
    from sqlalchemy import select

    from backend.queues.models import Queue, Task
    from backend.rules.schemas import RuleCreate
    from backend.rules.service import create_rule

    monkeypatch.setattr(settings, "spot_check_rates", {"rule": 0.25})
    create_rule(session=session, policy=policy, allow_live=True, data=RuleCreate(
        name="all-fraud", expression="true", action="decide", position=100, label="fraud",
        mode="active"))
    route_rows(session, settings, policy, [item_row(i) for i in range(80)])
    task = session.scalars(select(Task).join(Queue).where(Queue.kind == "SPOT_CHECK")).first()
    from backend.decisions.service import NewDecision, record_decisions

    record_decisions(session=session, decisions=[NewDecision(
        item_id=task.item_id, label="ok", source="moderator", task_id=task.id)])
    assert sampling_probabilities(session=session, ids=[task.item_id]).tolist() == [0.25]
