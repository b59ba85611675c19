"""Calibration through the backend: pair tasks and judgments, classifier bands with
out-of-fold scores, proposals, applying and restoring, what-if (hashing encoder)."""

import pytest
from sqlalchemy import select

from backend.calibration import service as calibration
from backend.calibration import thresholds
from backend.calibration.models import CalibrationRun, ThresholdSet
from backend.db import utcnow
from backend.decisions.models import DecisionEvent
from backend.items.models import ItemScore
from backend.items.service import ingest
from backend.queues.models import Task
from tests.backend.conftest import human_verdict, route_rows
from tests.conftest import item_row


def _labelled(session, settings, policy, n):
    """``n`` items with moderator verdicts: t-shirts are ok, cannabis seeds prohibited."""
    rows = [item_row(100 + i, title=("Cotton t-shirt size " if i % 2 else "Cannabis seeds "
                                     "strain ") + str(i)) for i in range(n)]
    ids, _ = route_rows(session, settings, policy, rows)
    for i, item_id in enumerate(ids):
        human_verdict(session, item_id, "ok" if i % 2 else "prohibited")
    return ids


def seed_pairs(session, settings, policy):
    """The seed's worked example as pair tasks: votes S,S,N at 0.55 and S,N,N at 0.75."""
    now = utcnow()
    _, ids = ingest(session=session, rows=[item_row(i) for i in range(4)], policy=policy,
                    now=now)
    tasks = calibration.enqueue_pairs(session=session, now=now, settings=settings,
                                      pairs=[(ids[0], ids[1], 0.55), (ids[2], ids[3], 0.75)])
    for task_id, votes in zip(tasks, ["SSN", "SNN"], strict=True):
        for worker, vote in zip(("w1", "w2", "w3"), votes, strict=True):
            calibration.record_pair_answer(session=session, task_id=task_id, worker_id=worker,
                                           answer="same" if vote == "S" else "different",
                                           now=now)
    return tasks


def test_seed_worked_example_through_pair_tasks(session, settings, policy):
    from ml.calibration import curve_table

    tasks = seed_pairs(session, settings, policy)
    assert {session.get(Task, t).state for t in tasks} == {"done"}  # 3 answers = overlap
    assert {session.get(Task, t).task_type for t in tasks} == {"pair"}
    run = calibration.run_calibration(session=session, kind="similarity",
                                      overrides={"reuse_target_precision": 0.9})
    assert run.labelled_count == 2
    assert [(p["distance"], p["n_same"], p["same"]) for p in run.labelled_set] == [
        (0.55, 2, True), (0.75, 1, False)]
    table = curve_table(calibration.run_curve(run), thresholds=[0.8, 0.4, 0.6], as_text=True)
    assert table["precision"].tolist() == ["50%", "undefined", "100%"]
    assert table["recall"].tolist() == ["100%", "0%", "100%"]
    assert table["accuracy"].tolist() == ["50%", "50%", "100%"]
    # two pairs cannot back a reuse distance at 90%: 48 more pairs (docs/calibration.md)
    assert run.result["proposed_version"] is None
    assert run.result["labels_needed"] == {"reuse_distance": 48}
    assert session.scalar(select(ThresholdSet).where(ThresholdSet.state == "proposed")) is None
    # the curves are saved as CSV and Parquet
    directory = calibration.run_dir(settings, run.id)
    assert (directory / "curves.csv").exists() and (directory / "curves.parquet").exists()


def test_pair_answers_after_the_run_are_not_in_it(session, settings, policy):
    seed_pairs(session, settings, policy)
    run = calibration.run_calibration(session=session, kind="similarity",
                                      now=utcnow().replace(year=2000))
    assert run.labelled_count == 0 and run.result["proposed_version"] is None
    assert "no answered pair tasks" in run.message


def test_too_few_labels_proposes_nothing_and_says_how_many(session, settings, policy, ml_on):
    from backend.ml_adapter.service import train

    _labelled(session, settings, policy, 24)
    train(session=session)
    run = calibration.run_calibration(session=session, kind="classifier")
    result = run.result
    assert result["out_of_fold"] is True and result["model_id"] == "classifier-v1"
    assert run.labelled_count == 24 and sorted(run.labelled_set)[0][1] in ("ok", "prohibited")
    upper = result["labels"]["prohibited"]["high"]
    assert upper["threshold"] is None and upper["labels_needed"] > 0
    assert result["labels_needed"]["prohibited.high"] == upper["labels_needed"]
    assert "more labelled items" in upper["message"]
    # the routing cut-off (target 80%) can be backed by 12 perfect items, the deciding one
    # (95%) cannot: a proposal keeps the current deciding cut-off
    ts = session.scalar(select(ThresholdSet).where(ThresholdSet.state == "proposed"))
    if ts is not None:
        assert ts.bands["prohibited"]["high"] == 0.9 and ts.calibration_run_id == run.id
    run2 = calibration.run_calibration(session=session, kind="classifier",
                                       overrides={"routing_target_precision": 0.99})
    assert run2.result["proposed_version"] is None
    assert "nothing can be backed" in run2.message


def test_no_labels_at_all(session, settings, policy):
    run = calibration.run_calibration(session=session, kind="classifier")
    assert run.status == "done" and run.labelled_count == 0
    assert run.result["proposed_version"] is None and "at least two labels" in run.message


def test_applied_set_routes_the_next_item_and_can_be_restored(session, settings, policy,
                                                                ml_on):
    from backend.ml_adapter.service import train

    _labelled(session, settings, policy, 70)
    train(session=session)
    old = thresholds.active_threshold_set(session=session, policy=policy).version
    run = calibration.run_calibration(session=session, kind="classifier",
                                      overrides={"target_precision": 0.9})
    new = run.result["proposed_version"]
    assert new is not None, run.message
    choice = run.result["labels"]["prohibited"]["high"]
    assert choice["threshold"] is not None and choice["precision_lower"] >= 0.9
    ts = thresholds.get_version(session=session, version=new)
    assert ts.state == "proposed" and ts.calibration_run_id == run.id
    assert ts.bands["prohibited"]["high"] == pytest.approx(choice["threshold"], abs=1e-6)
    thresholds.apply(session=session, version=new)

    def versions_for(title):
        [x], _ = route_rows(session, settings, policy, [item_row(900 + len(title), title=title)])
        events = session.scalars(select(DecisionEvent).where(DecisionEvent.item_id == x)).all()
        scores = session.scalars(select(ItemScore).where(ItemScore.item_id == x)).all()
        return {e.threshold_set_version for e in events} | {
            s.threshold_set_version for s in scores}

    assert versions_for("Cannabis seeds strain 12345 fresh") == {new}
    thresholds.apply(session=session, version=old)  # restore the previous set
    assert thresholds.get_version(session=session, version=new).state == "retired"
    assert versions_for("Cannabis seeds strain 777 premium pack") == {old}


def test_what_if_projects_todays_scores(session, settings, policy, ml_on):
    from backend.ml_adapter.service import train

    _labelled(session, settings, policy, 40)
    train(session=session)
    calibration.run_calibration(session=session, kind="classifier")
    thresholds.apply(session=session, version=thresholds.propose(
        session=session, policy=policy, reuse_distance=None,
        bands=thresholds.active_threshold_set(session=session, policy=policy).bands,
        auto_decide=["auto_ok", "ML_BAD_HIGH"]).version)
    route_rows(session, settings, policy, [item_row(500 + i, title=t) for i, t in enumerate(
        ["Cannabis seeds strain A1", "Cotton t-shirt size Z", "Garden hose", "Coffee mug"])])
    w = calibration.what_if(session=session)
    assert w["message"] is None and w["n_items"] >= 4
    assert w["n_auto"] + w["n_routed"] == w["n_items"]
    assert sum(w["bands"].values()) == w["n_items"]
    assert w["crowd_cost"] == pytest.approx(0.01 * 3 * w["n_routed"])
    assert {r["band"] for r in w["labels"]} >= {"ML_BAD_HIGH", "ML_BAD_MIDDLE"}


def test_runs_are_stored(session, settings, policy):
    seed_pairs(session, settings, policy)
    run = calibration.run_calibration(session=session, kind="similarity")
    assert session.get(CalibrationRun, run.id).params["reuse_target_precision"] == 0.95
    with pytest.raises(Exception, match="kind"):
        calibration.run_calibration(session=session, kind="nonsense")
