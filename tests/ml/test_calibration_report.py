"""What-if on today's scores, spot-check precision, threshold tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.calibration import (
    binary_curve,
    proportion_bounds,
    similarity_curve,
    spot_check_precision,
    what_if,
)


def labelled_curve() -> pd.DataFrame:
    # scores 0.95 x10 (9 positive), 0.75 x10 (6 positive), 0.3 x10 (1 positive)
    scores = np.repeat([0.95, 0.75, 0.3], 10)
    positive = np.r_[np.arange(10) < 9, np.arange(10) < 6, np.arange(10) < 1]
    return binary_curve(scores=scores, positive=positive)


def test_what_if_single_threshold() -> None:
    today = np.array([0.99, 0.96, 0.9, 0.8, 0.5, 0.1])
    result = what_if(
        scores=today, curve=labelled_curve(), thresholds=0.9, cost_per_item=0.01, overlap=3
    )
    assert result.n_items == 6
    assert result.n_auto == 3
    assert result.n_routed == 3
    assert result.auto_precision == pytest.approx(0.9)
    lo, hi = proportion_bounds(successes=9, trials=10)
    assert result.auto_precision_lower == pytest.approx(float(lo))
    assert result.auto_precision_upper == pytest.approx(float(hi))
    assert result.expected_auto_errors == pytest.approx(3 * 0.1)
    assert result.crowd_cost == pytest.approx(0.01 * 3 * 3)
    bands = result.bands
    assert bands["band"].tolist() == ["auto", "rest"]
    assert bands["n_items"].tolist() == [3, 3]
    assert bands["labelled_n"].tolist() == [10, 20]
    assert bands["precision"].tolist() == pytest.approx([0.9, 7 / 20])
    assert result.to_dict()["bands"][0]["band"] == "auto"


def test_what_if_bands() -> None:
    today = np.array([0.99, 0.96, 0.9, 0.8, 0.76, 0.7, 0.5, 0.1])
    result = what_if(
        scores=today,
        curve=labelled_curve(),
        thresholds={"middle": 0.7, "high": 0.9},
        cost_per_item=0.017,
        overlap=5,
    )
    bands = result.bands.set_index("band")
    assert list(bands.index) == ["high", "middle", "rest"]  # strictest first
    assert bands["auto"].tolist() == [True, False, False]
    assert bands["n_items"].tolist() == [3, 3, 2]
    assert bands.loc["middle", "precision"] == pytest.approx(0.6)
    assert bands.loc["middle", "labelled_n"] == 10
    assert bands.loc["middle", "expected_positive"] == pytest.approx(1.8)
    assert bands["n_routed"].tolist() == [0, 3, 2]
    assert result.crowd_cost == pytest.approx(0.017 * 5 * 5)
    both = what_if(
        scores=today,
        curve=labelled_curve(),
        thresholds={"middle": 0.7, "high": 0.9},
        auto_bands=["high", "middle"],
    )
    assert both.n_auto == 6 and both.auto_precision == pytest.approx(15 / 20)
    with pytest.raises(ValueError, match="auto_bands"):
        what_if(scores=today, curve=labelled_curve(), thresholds=0.9, auto_bands=["x"])


def test_what_if_on_distances_uses_le() -> None:
    pairs = pd.DataFrame({"distance": [0.1, 0.2, 0.3, 0.6], "same": [True, True, False, False]})
    result = what_if(scores=[0.05, 0.2, 0.25, 0.9], curve=similarity_curve(pairs), thresholds=0.2)
    assert result.n_auto == 2  # 0.05 and 0.2 (inclusive)
    assert result.auto_precision == 1.0


def test_what_if_with_no_labelled_support_is_undefined() -> None:
    result = what_if(scores=[0.99], curve=labelled_curve(), thresholds=0.99)
    assert result.n_auto == 1
    assert result.auto_precision is None and result.auto_precision_lower is None
    assert result.expected_auto_errors is None


def test_spot_check_precision() -> None:
    checks = pd.DataFrame(
        {
            "band": ["ML_GOOD"] * 200 + ["ML_BAD_HIGH"] * 50 + ["ML_BAD_HIGH"],
            "auto_label": ["OK"] * 200 + ["Prohibited"] * 50 + ["Prohibited"],
            "human_label": ["OK"] * 199 + ["Adult"] + ["Prohibited"] * 35 + ["OK"] * 15 + [None],
        }
    )
    out = spot_check_precision(checks, target_precision={"ML_GOOD": 0.97, "ML_BAD_HIGH": 0.9})
    out = out.set_index("band")
    assert out.loc["ML_BAD_HIGH", "n"] == 50  # the unchecked row is ignored
    assert out.loc["ML_BAD_HIGH", "agreements"] == 35
    assert out.loc["ML_BAD_HIGH", "precision"] == pytest.approx(0.7)
    assert bool(out.loc["ML_BAD_HIGH", "below_target"])  # upper bound < 0.9
    assert out.loc["ML_GOOD", "precision"] == pytest.approx(0.995)
    assert not out.loc["ML_GOOD", "below_target"]
    assert not out.loc["ML_GOOD", "unproven"]  # lower bound 0.972 >= 0.97
    lo, hi = proportion_bounds(successes=199, trials=200)
    assert out.loc["ML_GOOD", "precision_lower"] == pytest.approx(float(lo))
    assert out.loc["ML_GOOD", "precision_upper"] == pytest.approx(float(hi))
    strict = spot_check_precision(checks, target_precision=0.99).set_index("band")
    assert not strict.loc["ML_GOOD", "below_target"]
    assert strict.loc["ML_GOOD", "unproven"]
