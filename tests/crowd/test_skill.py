"""Calibrated confidence (issue #13 item 1): Dawid–Skene on thin evidence must not claim
certainty. ``sds`` shrinks worker matrices to the pooled one; crowd-kit's ``ds`` is the
counter-example the test keeps honest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crowd.aggregation import aggregate


def simulated(n_items: int = 3000, n_workers: int = 300, seed: int = 0
              ) -> tuple[pd.DataFrame, pd.Series]:
    """Two answers per item from workers of Beta(8, 2) accuracy (mean 0.8), 70/30 classes."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(2, size=n_items, p=[0.7, 0.3])
    accuracy = rng.beta(8, 2, size=n_workers)
    rows = []
    for i in range(n_items):
        for w in rng.choice(n_workers, size=2, replace=False):
            label = truth[i] if rng.random() < accuracy[w] else 1 - truth[i]
            rows.append((f"t{i}", f"w{w}", "yes" if label else "no"))
    answers = pd.DataFrame(rows, columns=["task", "worker", "label"])
    gold = pd.Series(np.where(truth == 1, "yes", "no"), index=[f"t{i}" for i in range(n_items)])
    return answers, gold


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    return simulated()


def _scored(answers: pd.DataFrame, gold: pd.Series, method: str) -> pd.DataFrame:
    v = aggregate(answers, method=method).set_index("task")
    v["right"] = v["label"] == gold.reindex(v.index)
    v["split"] = answers.groupby("task")["label"].nunique().reindex(v.index) == 2
    return v


def test_a_one_one_split_is_not_a_certainty(data):
    answers, gold = data
    ds, sds = _scored(answers, gold, "ds"), _scored(answers, gold, "sds")
    assert ((ds["confidence"] >= 0.99) & ds["split"]).sum() > 100  # what issue #13 found
    assert ((sds["confidence"] >= 0.99) & sds["split"]).sum() == 0
    assert sds.loc[sds["split"], "confidence"].max() < 0.97


def test_stated_confidence_is_a_probability(data):
    """Within each confidence band, the share right is the stated confidence (± 0.06)."""
    answers, gold = data
    v = _scored(answers, gold, "sds")
    v = v[v["label"].notna()]
    bands = pd.cut(v["confidence"], [0.5, 0.7, 0.9, 0.97, 1.0], include_lowest=True)
    table = v.groupby(bands, observed=True).agg(stated=("confidence", "mean"),
                                                right=("right", "mean"), n=("right", "size"))
    table = table[table["n"] >= 50]
    assert len(table) >= 3
    assert (abs(table["stated"] - table["right"]) <= 0.06).all(), table
    assert v["right"].mean() >= _scored(answers, gold, "ds")["right"].mean()


def test_gold_is_clamped_and_labels_keep_their_names(data):
    answers, gold = data
    given = gold.iloc[:200]
    v = aggregate(answers, method="sds", gold=given).set_index("task")
    assert (v.loc[given.index, "label"] == given).all()
    assert (v.loc[given.index, "confidence"] == 1.0).all()
    assert set(v["label"].dropna()) == {"yes", "no"}
