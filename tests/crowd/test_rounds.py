"""One composition (issue #13 item 5): the rounds `run_flow` plays are the backend job's;
what a round decided stays decided; a flow never stops silently with items waiting."""

from __future__ import annotations

import dataclasses
import warnings

import pandas as pd
import pytest

from crowd.aggregation import aggregate
from crowd.config import CrowdConfig
from crowd.emulator import SimWorker
from crowd.flow import run_flow
from crowd.rounds import STOP_ROUNDS, decide
from crowd.store import MemoryStore


def _answers(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["task", "worker", "label"])


def test_decide_leaves_resolved_items_alone():
    config = CrowdConfig(overlap=2, min_answers=2, max_overlap=4, target_confidence=0.8)
    valid = _answers([
        ("done", "a", "ok"), ("done", "b", "adult"),  # decided earlier; a tie now
        ("open", "a", "ok"), ("open", "b", "adult"),  # a tie: one more answer
        ("agreed", "a", "ok"), ("agreed", "b", "ok"),
        ("capped", "a", "ok"), ("capped", "b", "adult"), ("capped", "c", "ok"),
        ("capped", "d", "adult"),
    ])
    out = decide(valid, config=config, method="mv", gold=None,
                 open_items={"open", "agreed", "capped"}, exhausted=False)
    assert list(out.decided["task"]) == ["agreed"]
    assert list(out.more["task"]) == ["open"] and out.more.loc[0, "overlap"] == 3
    assert set(out.to_people) == {"capped"} and "tie" in out.to_people["capped"]
    stopped = decide(valid, config=config, method="mv", gold=None,
                     open_items={"open", "never"}, exhausted=True)
    assert stopped.more.empty
    assert set(stopped.to_people) == {"open", "never"}
    assert "no usable answer" in stopped.to_people["never"]


def test_run_flow_goes_on_until_every_item_is_resolved(emulator_factory, client_for, plan, truth):
    """Weak workers and a high target need more than the old six rounds; without a round
    limit every item ends decided or with people, none silently waiting."""
    workers = [SimWorker(f"w{i}", accuracy=0.65, seconds_per_task=10) for i in range(14)]
    config = CrowdConfig(overlap=2, min_answers=2, max_overlap=12, target_confidence=0.85,
                         tasks_per_suite=5, golden_per_suite=0, aggregation="mv")
    emu = emulator_factory(seed=4, workers=workers, truth=truth)
    flow_plan = dataclasses.replace(plan, config=config, golden=None)
    result = run_flow(client_for(emu), plan=flow_plan, store=MemoryStore(), wait=emu.work,
                      check=False)
    assert len(result.rounds) > 6 and result.waiting == 0
    assert set(result.verdicts["status"]) <= {"decided", "to_people"}
    people = result.verdicts[result.verdicts["status"] == "to_people"]
    assert people["reason"].notna().all()
    # a decided item got no answer after it was decided: its frozen count is its total
    decided = result.verdicts[result.verdicts["status"] == "decided"].set_index("task")
    got = result.valid.groupby("task").size()
    assert (decided["n_answers"] == got.reindex(decided.index)).all()


def test_run_flow_says_how_many_items_still_wait(emulator_factory, client_for, plan, truth):
    workers = [SimWorker(f"w{i}", accuracy=0.6, seconds_per_task=10) for i in range(10)]
    config = CrowdConfig(overlap=2, min_answers=2, max_overlap=8, target_confidence=0.9,
                         tasks_per_suite=5, golden_per_suite=0, aggregation="mv")
    emu = emulator_factory(seed=5, workers=workers, truth=truth)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_flow(client_for(emu), plan=dataclasses.replace(plan, config=config,
                                                                    golden=None),
                          store=MemoryStore(), wait=emu.work, check=False, max_rounds=1)
    assert result.stopped == STOP_ROUNDS and result.waiting > 0
    assert (result.verdicts["status"] == "needs_more").sum() == result.waiting
    assert any(f"{result.waiting} items still waiting" in str(w.message) for w in caught)


def test_gold_mv_keeps_workers_without_gold_answers():
    answers = _answers([
        ("g1", "a", "ok"), ("g1", "b", "adult"), ("x", "a", "ok"),
        ("only-c", "c", "adult"), ("only-c", "d", "adult"),  # c, d saw no gold
    ])
    out = aggregate(answers, method="gold_mv", gold={"g1": "ok"}).set_index("task")
    assert out.loc["only-c", "label"] == "adult" and out.loc["only-c", "n_answers"] == 2
    assert out.loc["x", "label"] == "ok"
    with pytest.raises(ValueError, match="gold"):
        aggregate(answers, method="gold_mv", gold={"nowhere": "ok"})


def test_worker_skill_carries_over_from_earlier_pools():
    """A 1–1 split between an honest worker and one who always answers wrong cannot be
    decided from this pool alone; with the earlier pool's answers (where the liar
    disagreed with three others) it is decided, and right."""
    config = CrowdConfig(overlap=2, min_answers=2, max_overlap=2, target_confidence=0.9)
    truth = {f"new{i}": ("ok", "adult")[i % 2] for i in range(4)}
    flip = {"ok": "adult", "adult": "ok"}
    valid = _answers([(t, w, lab if w == "honest" else flip[lab])
                      for t, lab in truth.items() for w in ("honest", "liar")])
    earlier = _answers([
        (f"old{i}", w, (("ok", "adult")[i % 2] if w != "liar" else ("adult", "ok")[i % 2]))
        for i in range(60) for w in ("honest", "liar", "a", "b")])
    alone = decide(valid, config=config, method="sds", gold=None, open_items=set(truth),
                   exhausted=False)
    assert alone.decided.empty and set(alone.to_people) == set(truth)
    carried = decide(valid, config=config, method="sds", gold=None, open_items=set(truth),
                     exhausted=False, context=earlier)
    assert set(carried.decided["task"]) == set(truth)  # the earlier items are not open
    assert (carried.decided.set_index("task")["label"] == pd.Series(truth)).all()
