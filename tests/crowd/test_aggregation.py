"""Aggregation methods by name; ties and thin evidence become ``needs_more``."""

from __future__ import annotations

import pandas as pd
import pytest

from crowd.aggregation import METHODS, aggregate
from crowd.quality import crowd_metrics, pairwise_agreement
from crowd.store import JsonFileStore, MemoryStore


def _answers() -> pd.DataFrame:
    rows = []
    for t in range(30):  # five good workers and one contrarian
        truth = "bad" if t % 3 == 0 else "ok"
        for w in range(5):
            rows.append(
                (f"t{t}", f"w{w}", truth if (t + w) % 7 else ("ok" if truth == "bad" else "bad"))
            )
        rows.append((f"t{t}", "liar", "ok" if truth == "bad" else "bad"))
    rows += [("tie", "w0", "ok"), ("tie", "w1", "bad")]
    return pd.DataFrame(rows, columns=["task", "worker", "label"])


@pytest.mark.parametrize("method", [m for m in METHODS if m != "gold_mv"])
def test_every_method_recovers_the_majority(method):
    out = aggregate(_answers(), method=method)
    assert list(out.columns) == ["task", "label", "confidence", "n_answers", "method", "status"]
    real = out[out["task"] != "tie"].set_index("task")
    truth = pd.Series({f"t{t}": "bad" if t % 3 == 0 else "ok" for t in range(30)})
    assert (real["label"] == truth.reindex(real.index)).mean() >= 0.95
    assert real["confidence"].between(0, 1).all() and (real["n_answers"] == 6).all()


def test_tie_is_needs_more_never_a_coin_flip():
    out = aggregate(_answers(), method="mv").set_index("task")
    assert out.loc["tie", "status"] == "needs_more" and out.loc["tie", "label"] is None
    assert out.loc["tie", "confidence"] == pytest.approx(0.5)


def test_thresholds_make_needs_more():
    answers = pd.DataFrame(
        {
            "task": ["a", "a", "a", "b"],
            "worker": ["x", "y", "z", "x"],
            "label": ["ok", "ok", "bad", "ok"],
        }
    )
    out = aggregate(answers, method="mv", target_confidence=0.7, min_answers=2).set_index("task")
    assert out.loc["a", "status"] == "needs_more"  # 2/3 < 0.7
    assert out.loc["b", "status"] == "needs_more"  # one answer
    relaxed = aggregate(answers, method="mv", target_confidence=0.6, min_answers=1).set_index(
        "task"
    )
    assert (relaxed["status"] == "decided").all()


def test_gold_guides_ds_and_gold_mv():
    answers = _answers()
    gold = {"t0": "bad", "t1": "ok", "t2": "ok"}
    for method in ("ds", "gold_mv", "mv"):
        out = aggregate(answers, method=method, gold=gold).set_index("task")
        assert out.loc["t0", "label"] == "bad"
    ds = aggregate(answers, method="ds", gold=gold).set_index("task")
    assert ds.loc["t0", "confidence"] == pytest.approx(1.0)  # clamped to the known label
    with pytest.raises(ValueError):
        aggregate(answers, method="gold_mv")
    with pytest.raises(ValueError):
        aggregate(answers, method="coin")


def test_metrics_and_agreement():
    answers = pd.DataFrame(
        {
            "task": ["a", "a", "b", "b", "g"],
            "worker": ["x", "y", "x", "y", "x"],
            "label": ["ok", "ok", "ok", "bad", "ok"],
            "assignment_id": ["1", "2", "1", "2", "1"],
            "time_spent_s": [10.0, 20.0, 10.0, 20.0, 10.0],
            "is_golden": [False] * 4 + [True],
            "golden_label": [None] * 4 + ["bad"],
            "submitted_at": pd.Timestamp("2024-01-01", tz="UTC"),
            "pool_id": "p",
            "reward": [0.03, 0.02, 0.03, 0.02, 0.03],
        }
    )
    assert pairwise_agreement(answers[~answers["is_golden"]]) == 0.5
    m = crowd_metrics(answers).loc["p"]
    assert (m["workers"], m["items"], m["answers"]) == (2, 2, 4)
    assert m["cost"] == pytest.approx(0.05) and m["cost_per_item"] == pytest.approx(0.025)
    assert m["golden_accuracy"] == 0.0 and m["median_time_per_item_s"] == 15.0
    assert len(crowd_metrics(answers, by="day")) == 1


@pytest.mark.parametrize("store_kind", ["memory", "json"])
def test_stores_round_trip(store_kind, tmp_path):
    store = MemoryStore() if store_kind == "memory" else JsonFileStore(tmp_path / "s.json")
    assert store.get("k") is None
    store.put("k", {"pool_id": "1", "tasks": {"a": "t1"}})
    assert store.get("k") == {"pool_id": "1", "tasks": {"a": "t1"}}
    if store_kind == "json":
        assert JsonFileStore(tmp_path / "s.json").get("k")["pool_id"] == "1"
