"""Inverse-probability weighting: a band seen only through spot checks is estimated fairly."""

from __future__ import annotations

import numpy as np
import pytest

from ml.calibration import (
    binary_curve,
    choose_threshold,
    counts_at,
    effective_size,
    label_curve,
    proportion_bounds,
    spot_check_precision,
)


def _stream(seed: int = 0, n: int = 200_000):
    """A day's stream: scores, the truth, and which items got a human label.

    Items scoring >= 0.8 were decided automatically and reach people only through 5 %
    spot checks; the others were all routed to people. Precision rises with the score."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.0, 1.0, n)
    truth = rng.uniform(size=n) < np.clip(0.55 + 0.45 * s, 0, 1)
    p_label = np.where(s >= 0.8, 0.05, 1.0)
    labelled = rng.uniform(size=n) < p_label
    return s, truth, p_label, labelled


def test_weighted_precision_is_right_where_the_plain_one_is_biased() -> None:
    s, truth, p_label, labelled = _stream()
    t = 0.6
    population = truth[s >= t].mean()  # what the stream really shows above t
    plain = counts_at(binary_curve(scores=s[labelled], positive=truth[labelled]),
                      thresholds=[t]).iloc[0]
    weighted = counts_at(binary_curve(scores=s[labelled], positive=truth[labelled],
                                      weights=1.0 / p_label[labelled]), thresholds=[t]).iloc[0]
    lo_w, hi_w = proportion_bounds(successes=weighted["tp"], trials=weighted["n_auto"],
                                   sided="two", confidence=0.99)
    lo_p, hi_p = proportion_bounds(successes=plain["tp"], trials=plain["n_auto"],
                                   sided="two", confidence=0.99)
    # the spot-checked band is under-represented 20x: the plain estimate misses
    assert not lo_p <= population <= hi_p
    assert plain["precision"] < population - 0.02
    assert lo_w <= population <= hi_w
    # the bound rests on fewer effective labels than were counted
    assert weighted["labels_auto"] == plain["n_auto"]
    assert weighted["n_auto"] < 0.5 * plain["n_auto"]
    # and the automation share is the stream's, not the labelled set's
    assert weighted["weight_auto"] == pytest.approx((s >= t).sum(), rel=0.03)


def test_threshold_choice_maximises_the_estimated_stream_share() -> None:
    s, truth, p_label, labelled = _stream(seed=1)
    w = 1.0 / p_label[labelled]
    curve = binary_curve(scores=s[labelled], positive=truth[labelled], weights=w)
    choice = choose_threshold(curve, target_precision=0.93)
    assert choice.threshold is not None and choice.n_effective is not None
    assert choice.n_effective < choice.n_auto  # labels behind it vs effective size
    true_precision = truth[s >= choice.threshold].mean()
    assert true_precision >= 0.93
    assert choice.weight_auto == pytest.approx((s >= choice.threshold).sum(), rel=0.05)
    assert "rests on" in choice.message and "effective sample size" in choice.message


def test_unit_weights_give_the_plain_curve() -> None:
    rng = np.random.default_rng(2)
    proba = rng.dirichlet([1, 1, 1], size=500)
    y = rng.choice(["a", "b", "c"], size=500)
    plain = label_curve(proba=proba, y_true=y, classes=["a", "b", "c"], label="b")
    unit = label_curve(proba=proba, y_true=y, classes=["a", "b", "c"], label="b",
                       weights=np.ones(500))
    for col in ("threshold", "n_auto", "tp", "fp", "precision", "recall"):
        np.testing.assert_allclose(unit[col].to_numpy(dtype=float),
                                   plain[col].to_numpy(dtype=float), atol=1e-9)
    a = choose_threshold(plain, target_precision=0.5)
    b = choose_threshold(unit, target_precision=0.5)
    assert (a.threshold, a.n_auto, a.tp) == (b.threshold, b.n_auto, b.tp)
    assert effective_size(np.ones(7)) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="positive and finite"):
        label_curve(proba=proba, y_true=y, classes=["a", "b", "c"], label="b",
                    weights=np.zeros(500))


def test_spot_check_report_pooled_over_bands_is_weighted() -> None:
    import pandas as pd

    # band A: 20 checks at 5 % (stands for 400 items, 50 % right); band B: 400 checks at
    # 100 % (all right). Pooled, the stream's automation is right 75 % of the time.
    checks = pd.DataFrame(
        {"band": ["all"] * 420, "auto_label": ["x"] * 420,
         "human_label": ["x"] * 10 + ["y"] * 10 + ["x"] * 400,
         "weight": [20.0] * 20 + [1.0] * 400})
    table = spot_check_precision(checks, target_precision=0.9)
    row = table.iloc[0]
    assert row["precision"] == pytest.approx(0.75)
    assert row["n"] == 420 and row["n_effective"] == pytest.approx(
        effective_size(checks["weight"]))
    assert row["precision_lower"] < 0.75 < row["precision_upper"] < 0.9
    assert bool(row["below_target"])
