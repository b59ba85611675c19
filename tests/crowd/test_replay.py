"""``quorum crowd replay`` (issue #13 item 7): recorded answers through the crowd path."""

from __future__ import annotations

import random

import pandas as pd
import pytest
from typer.testing import CliRunner

from crowd.config import CrowdConfig
from crowd.replay import RecordingError, read_recording, replay

LABELS = ["ok", "adult"]


def recording(n_items: int = 60, *, seed: int = 3) -> pd.DataFrame:
    """Seven workers answer every item (grouped by item, as exports are); two of them,
    listed first, always say "adult"; gold on every other item."""
    rng = random.Random(seed)
    rows = []
    for i in range(n_items):
        truth = LABELS[(i * 5) % 3 == 0]
        for w in ["s1", "s2", "h1", "h2", "h3", "h4", "h5"]:
            good = not w.startswith("s") and rng.random() < 0.9
            label = truth if good else ("adult" if w.startswith("s") else LABELS[truth == "ok"])
            rows.append({"item": f"it{i:03d}", "worker": w, "label": label,
                         "time": 12.0, "gold": truth if i % 2 == 0 else None})
    return pd.DataFrame(rows)


CONFIG = CrowdConfig(overlap=2, min_answers=2, max_overlap=7, target_confidence=0.75,
                     tasks_per_suite=5, golden_per_suite=1, aggregation="mv",
                     golden_min_answers=3, golden_min_accuracy=0.6)


def test_replay_buys_fewer_answers_than_all_and_scores_them():
    rec = recording()
    out = replay(rec, config=CONFIG, seed=0, golden_share=0.1, golden_min=6)
    r = out.report
    assert r.control_tasks == 6 and r.scored_gold == 24 and r.items == 54
    assert r.stopped == "done" and out.flow.waiting == 0
    assert r.mv_all_answers_per_item == 7 and r.answers_per_item < 5
    assert r.accuracy >= 0.9 and r.accuracy >= r.mv_all_accuracy - 0.05
    assert r.cost == pytest.approx(
        (r.answers_per_item + r.control_answers_per_item) * r.items * CONFIG.reward_per_task)
    # the spammers listed first for every item are caught by the control tasks
    assert {"s1", "s2"} <= set(out.flow.banned)


def test_the_shuffle_spreads_first_answers_over_workers():
    rec = recording()
    firsts = set()
    for seed in (0, 1):
        flow = replay(rec, config=CONFIG, seed=seed).flow
        first = flow.answers.sort_values("assignment_id").drop_duplicates("task")
        firsts.add(tuple(first["worker"]))
    assert len(firsts) == 2  # another seed, other workers first


def test_reading_csv_and_parquet_and_bad_files(tmp_path):
    rec = recording(10)
    rec.to_csv(tmp_path / "r.csv", index=False)
    rec.to_parquet(tmp_path / "r.parquet")
    a, b = read_recording(tmp_path / "r.csv"), read_recording(tmp_path / "r.parquet")
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert a["gold"].isna().sum() == 35 and a["time"].dtype == float
    rec.drop(columns=["worker"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(RecordingError, match="worker"):
        read_recording(tmp_path / "bad.csv")
    with pytest.raises(RecordingError, match="no recording"):
        read_recording(tmp_path / "missing.csv")


def test_cli_prints_the_comparison(tmp_path, monkeypatch):
    from backend.cli import app

    recording().to_csv(tmp_path / "r.csv", index=False)
    monkeypatch.setenv("QUORUM_CROWD_AGGREGATION", "mv")
    monkeypatch.setenv("QUORUM_CROWD_TASKS_PER_SUITE", "5")
    from backend.crowdwork.settings import get_crowd_settings

    get_crowd_settings.cache_clear()
    runner = CliRunner()
    r = runner.invoke(app, ["crowd", "replay", str(tmp_path / "r.csv"), "--seed", "2"])
    get_crowd_settings.cache_clear()
    assert r.exit_code == 0, r.output
    for what in ("accuracy on gold", "answers per item", "control answers", "cost $",
                 "majority vote, all answers"):
        assert what in r.output
    r = runner.invoke(app, ["crowd", "replay", str(tmp_path / "nope.csv")])
    # backend.cli.main prints the sentence and exits with the error's code
    assert r.exception.exit_code == 2 and "no recording" in r.exception.message
