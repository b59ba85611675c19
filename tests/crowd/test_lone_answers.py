"""Lone answers in the worker matrices (``CrowdConfig.lone_answers``; issue #13, the
ConvAbuse "golden schedule" jump to 14.8% sent to people). Calibrated stopping asks a
second answer only where the first was unsure, so the items with several answers are not
a random sample; a model fitted on them alone learns the wrong worker matrices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crowd.aggregation import aggregate
from crowd.config import CrowdConfig
from crowd.skill import ShrunkDawidSkene


def adaptive_crowd(seed: int = 0, n: int = 4000):
    """Binary items (15% bad), 8 workers right 95% of the time. Every item gets one
    answer; a "bad" first answer (unlikely under the prior) buys two more, and 5% of the
    "ok" ones do — the shape calibrated stopping leaves. 30 control tasks."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(n) < 0.15).astype(int)
    rows = []
    for i in range(n):
        order = rng.permutation(8)
        first = truth[i] if rng.random() < 0.95 else 1 - truth[i]
        rows.append((i, int(order[0]), int(first)))
        if first == 1 or rng.random() < 0.05:
            for w in order[1:3]:
                rows.append((i, int(w), int(truth[i] if rng.random() < 0.95 else 1 - truth[i])))
    answers = pd.DataFrame(rows, columns=["task", "worker", "label"])
    gold_items = rng.choice(n, 30, replace=False)
    return answers, truth, pd.Series(truth[gold_items], index=gold_items)


def _unanimous_bad(model: ShrunkDawidSkene, answers: pd.DataFrame, truth: np.ndarray):
    p = model.probas_.to_numpy()
    idx = model.probas_.index.to_numpy()
    g = answers.groupby("task")["label"].agg(["size", "sum"]).reindex(idx)
    three_bad = ((g["size"] == 3) & (g["sum"] == 3)).to_numpy()
    return (float(p[three_bad, 1].mean()), float((truth[idx][three_bad] == 1).mean()),
            float((p.argmax(axis=1) == truth[idx]).mean()))


def test_left_out_lone_answers_turn_three_agreeing_answers_into_the_wrong_label():
    answers, truth, gold = adaptive_crowd()
    stated, right, accuracy = _unanimous_bad(
        ShrunkDawidSkene().fit(answers, true_labels=gold), answers, truth)
    assert right == 1.0 and stated < 0.5 and accuracy < 0.9  # three "bad"s read as "ok"
    stated, right, accuracy = _unanimous_bad(
        ShrunkDawidSkene(lone_answers=True).fit(answers, true_labels=gold), answers, truth)
    assert stated > 0.99 and right == 1.0 and accuracy > 0.98


def test_the_config_reaches_the_aggregation():
    answers, truth, gold = adaptive_crowd()
    cfg = CrowdConfig(aggregation="sds", overlap=1, min_answers=1, target_confidence=0.95,
                      lone_answers=True)
    kw = dict(method="sds", gold=gold, target_confidence=0.95, min_answers=1)
    plain = aggregate(answers, **kw).set_index("task")
    lone = aggregate(answers, lone_answers=cfg.lone_answers, **kw).set_index("task")
    truth_of = pd.Series(truth.astype(str), index=pd.Index(range(len(truth))).astype(str))
    assert (lone["label"] == truth_of.reindex(lone.index)).mean() > \
        (plain["label"] == truth_of.reindex(plain.index)).mean() + 0.05


@pytest.mark.parametrize("lone", [False, True])
def test_a_random_sample_is_the_same_either_way(lone):
    """Three answers on every item (nothing adaptive): the two agree to within noise."""
    rng = np.random.default_rng(1)
    truth = (rng.random(1500) < 0.15).astype(int)
    rows = [(i, int(w), int(truth[i] if rng.random() < 0.9 else 1 - truth[i]))
            for i in range(1500) for w in rng.choice(8, 3, replace=False)]
    answers = pd.DataFrame(rows, columns=["task", "worker", "label"])
    model = ShrunkDawidSkene(lone_answers=lone).fit(answers)
    assert (model.probas_.to_numpy().argmax(axis=1) == truth).mean() > 0.95
