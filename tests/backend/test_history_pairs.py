"""The reuse distance from labelled neighbour pairs in the history (issue 12): no fresh
pair tasks are needed where imported verdicts already answer the question."""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, select

from backend.calibration import service as calibration
from backend.calibration import thresholds
from backend.imports.service import import_verdicts
from backend.queues.models import Task
from ml.similarity import labelled_neighbour_pairs
from tests.conftest import item_row


def _history(n: int) -> list[dict[str, object]]:
    rows = []
    for i in range(n):
        ok = i % 2 == 0
        title = (f"Cotton t-shirt size {i}" if ok else f"Cannabis seeds strain {i}")
        rows.append({**item_row(i, title=title, description=""),
                     "label": "ok" if ok else "prohibited", "decided_by": "team"})
    return rows


def test_imported_history_backs_the_reuse_distance_without_pair_tasks(session, settings,
                                                                      policy, ml_on):
    assert import_verdicts(session=session, rows=_history(400), policy=policy).decisions == 400
    run = calibration.run_calibration(session=session, kind="similarity",
                                      overrides={"reuse_target_precision": 0.95})
    assert session.scalar(select(func.count()).select_from(Task)) == 0  # no pair task at all
    assert run.result["pairs"]["pair_tasks"] == 0
    assert run.result["pairs"]["history"] >= 150  # one per item, mutual pairs once
    assert run.result["proposed_version"] is not None, run.result["messages"]
    evidence = run.result["backing"]
    assert evidence["backed"] and evidence["lower"] >= 0.95
    assert evidence["encoder_id"] == run.result["encoder_id"]
    ts = thresholds.get_version(session=session, version=run.result["proposed_version"])
    assert ts.reuse_distance == evidence["threshold"]
    assert {p["source"] for p in run.labelled_set} == {"history"}


def test_a_short_history_refuses_and_says_how_many_more(session, settings, policy, ml_on):
    import_verdicts(session=session, rows=_history(12), policy=policy)
    run = calibration.run_calibration(session=session, kind="similarity",
                                      overrides={"reuse_target_precision": 0.95})
    assert run.result["proposed_version"] is None
    assert 0 < run.result["pairs"]["history"] <= 12
    needed = run.result["labels_needed"]["reuse_distance"]
    assert needed is not None and needed > 0
    assert "more labelled items" in run.message


def test_labelled_neighbour_pairs_skip_self_unlabelled_and_count_mutual_pairs_once() -> None:
    ids = np.array([[1, 2, 3], [2, 1, 3], [3, 9, 1], [4, 4, 4]])
    dist = np.array([[0.0, 0.1, 0.5], [0.0, 0.1, 0.4], [0.0, 0.2, 0.5], [0.0, 0.0, 0.0]])
    labels = {1: "ok", 2: "ok", 3: "bad", 4: "ok"}  # 9 has no verdict
    pairs = labelled_neighbour_pairs([1, 2, 3, 4], ids, dist, labels)
    assert pairs[["item_id", "other_item_id", "same"]].values.tolist() == [
        [1, 2, True], [3, 1, False]]
    assert pairs["distance"].tolist() == [0.1, 0.5]
    assert pairs["reused_label"].tolist() == ["ok", "ok"]  # the neighbour's verdict
