"""Calibration curves and threshold choice: the seed's worked example, to the digit."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ml.calibration import (
    CURVE_COLUMNS,
    Costs,
    aggregate_pair_votes,
    binary_curve,
    choose_reuse_distance,
    choose_threshold,
    counts_at,
    curve_table,
    label_curve,
    majority_same,
    similarity_curve,
    wilson_bounds,
)

# ------------------------------------------------------------------ the seed example

SEED_VOTES = pd.DataFrame(
    {
        "pair_id": [1, 1, 1, 2, 2, 2],
        "worker": ["w1", "w2", "w3", "w1", "w2", "w3"],
        "same": ["S", "S", "N", "S", "N", "N"],
    }
)
SEED_DISTANCES = pd.DataFrame({"pair_id": [1, 2], "distance": [0.55, 0.75]})


def seed_pairs() -> pd.DataFrame:
    majority = aggregate_pair_votes(SEED_VOTES)
    return SEED_DISTANCES.merge(majority[["pair_id", "same"]], on="pair_id")


def test_seed_majority_vote() -> None:
    majority = aggregate_pair_votes(SEED_VOTES)
    assert majority["pair_id"].tolist() == [1, 2]
    assert majority["n_votes"].tolist() == [3, 3]
    assert majority["n_same"].tolist() == [2, 1]
    assert majority["same"].tolist() == [True, False]
    assert majority_same(["S", "S", "N"]) is True
    assert majority_same(["S", "N", "N"]) is False
    assert majority_same(["S", "N"]) is False  # a tie is not a majority for "same"


def test_seed_majority_vote_agrees_with_crowd_kit() -> None:
    from crowdkit.aggregation import MajorityVote

    long = SEED_VOTES.rename(columns={"pair_id": "task", "same": "label"})
    crowd = MajorityVote().fit_predict(long)
    ours = aggregate_pair_votes(SEED_VOTES).set_index("pair_id")["same"]
    assert {task: label == "S" for task, label in crowd.items()} == ours.to_dict()


def test_seed_worked_example_to_the_digit() -> None:
    curve = similarity_curve(seed_pairs())
    table = curve_table(curve, thresholds=[0.8, 0.4, 0.6])
    assert table["threshold"].tolist() == [0.8, 0.4, 0.6]
    precision = table["precision"].tolist()
    assert precision[0] == 0.5
    assert math.isnan(precision[1])  # undefined: nothing predicted similar
    assert precision[2] == 1.0
    assert table["recall"].tolist() == [1.0, 0.0, 1.0]
    assert table["accuracy"].tolist() == [0.5, 0.5, 1.0]
    assert table["n_auto"].tolist() == [2, 0, 1]
    assert table["n_routed"].tolist() == [0, 2, 1]

    text = curve_table(curve, thresholds=[0.8, 0.4, 0.6], as_text=True)
    assert text[["precision", "recall", "accuracy"]].values.tolist() == [
        ["50%", "100%", "50%"],
        ["undefined", "0%", "50%"],
        ["100%", "100%", "100%"],
    ]


def test_seed_example_from_a_votes_column_and_exact_grid() -> None:
    pairs = pd.DataFrame(
        {
            "item_a": [10, 20],
            "item_b": [11, 21],
            "votes": [["S", "S", "N"], ["S", "N", "N"]],
            "distance": [0.55, 0.75],
        }
    )
    curve = similarity_curve(pairs, thresholds=[0.4, 0.6, 0.8])
    assert list(curve.columns) == list(CURVE_COLUMNS)
    assert curve[["tp", "fp", "fn", "tn"]].values.tolist() == [
        [0, 0, 1, 1],
        [1, 0, 0, 1],
        [1, 1, 0, 0],
    ]
    assert curve.attrs["direction"] == "le"


def test_thresholds_are_inclusive() -> None:
    same = similarity_curve(pd.DataFrame({"distance": [0.6], "same": [True]}), thresholds=[0.6])
    assert same["n_auto"].tolist() == [1]  # distance == T counts as similar
    scored = binary_curve(scores=[0.9], positive=[True], thresholds=[0.9])
    assert scored["n_auto"].tolist() == [1]  # score == t counts as positive


def test_seed_pairs_cannot_back_any_reuse_distance() -> None:
    choice = choose_reuse_distance(seed_pairs(), target_precision=0.9)
    assert choice.threshold is None
    # best observed: precision 1 at T = 0.55 on 1 of 2 pairs. One-sided 95 % Wilson on
    # n/n clears 0.9 from n = ceil(1.6449^2 * 0.9 / 0.1) = 25 reused pairs, i.e. 50
    # labelled pairs at this mix: 48 more.
    assert choice.labels_needed == 48
    assert choice.labels_needed_threshold == 0.55
    assert "48 more labelled items" in choice.message


# ------------------------------------------------------------------ curves vs brute force


def brute_force(scores: np.ndarray, positive: np.ndarray, t: float, direction: str) -> dict:
    predicted = scores >= t if direction == "ge" else scores <= t
    tp = int((predicted & positive).sum())
    fp = int((predicted & ~positive).sum())
    fn = int((~predicted & positive).sum())
    tn = int((~predicted & ~positive).sum())
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "n_auto": tp + fp}


@pytest.mark.parametrize("direction", ["ge", "le"])
def test_curve_matches_brute_force_with_ties(direction: str) -> None:
    rng = np.random.default_rng(7)
    scores = np.round(rng.random(500), 2)  # many ties
    positive = rng.random(500) < scores
    curve = binary_curve(scores=scores, positive=positive, direction=direction)
    assert curve["threshold"].tolist() == sorted(set(scores.tolist()))
    for row in curve.itertuples():
        expected = brute_force(scores, positive, row.threshold, direction)
        assert {k: getattr(row, k) for k in expected} == expected
        assert row.n_routed == 500 - row.n_auto
        assert row.precision == pytest.approx(expected["tp"] / expected["n_auto"])
        assert row.accuracy == pytest.approx((expected["tp"] + expected["tn"]) / 500)
    grid = [-1.0, 0.105, 0.5, 2.0]
    on_grid = binary_curve(scores=scores, positive=positive, thresholds=grid, direction=direction)
    read = counts_at(curve, thresholds=grid)
    for column in ("tp", "fp", "fn", "tn", "n_auto"):
        assert on_grid[column].tolist() == read[column].tolist()
    for t, row in zip(grid, on_grid.itertuples(), strict=True):
        assert row.tp == brute_force(scores, positive, t, direction)["tp"]


def test_precision_undefined_when_nothing_is_automated() -> None:
    curve = binary_curve(scores=[0.2, 0.4], positive=[True, False], thresholds=[0.5])
    assert curve["n_auto"].tolist() == [0]
    assert math.isnan(curve["precision"].iloc[0])
    no_positives = binary_curve(scores=[0.2, 0.4], positive=[False, False])
    assert no_positives["recall"].isna().all()
    assert no_positives["precision"].tolist() == [0.0, 0.0]


def test_curve_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        binary_curve(scores=[0.1, float("nan")], positive=[True, False])
    with pytest.raises(ValueError, match="length"):
        binary_curve(scores=[0.1, 0.2], positive=[True])
    with pytest.raises(ValueError, match="direction"):
        binary_curve(scores=[0.1], positive=[True], direction="gt")  # type: ignore[arg-type]


def test_label_curve_requires_the_argmax() -> None:
    classes = ["OK", "Adult", "Prohibited"]
    proba = np.array(
        [
            [0.2, 0.7, 0.1],  # Adult argmax, true Adult
            [0.5, 0.45, 0.05],  # OK argmax: never auto-Adult, even at t = 0.4
            [0.1, 0.6, 0.3],  # Adult argmax, true Prohibited
            [0.3, 0.3, 0.4],  # Prohibited argmax, true Adult
        ]
    )
    y = ["Adult", "Adult", "Prohibited", "Adult"]
    curve = label_curve(proba=proba, y_true=y, classes=classes, label="Adult")
    assert curve["threshold"].tolist() == [0.6, 0.7]  # only argmax items' P(Adult)
    read = counts_at(curve, thresholds=[0.4, 0.65, 0.7])
    assert read["n_auto"].tolist() == [2, 1, 1]
    assert read["tp"].tolist() == [1, 1, 1]
    assert read["fn"].tolist() == [2, 2, 2]  # recall is over all 3 true Adult items
    assert read["n_routed"].tolist() == [2, 3, 3]


# ------------------------------------------------------------------ choosing


def staircase_curve() -> pd.DataFrame:
    """100 positives, then 10 negatives, then 200 positives, by descending score."""
    positive = np.r_[
        np.ones(100, bool), np.zeros(10, bool), np.ones(200, bool), np.zeros(300, bool)
    ]
    scores = np.linspace(1.0, 0.0, positive.size)
    return binary_curve(scores=scores, positive=positive)


def test_max_automation_scans_past_a_dip_in_the_lower_bound() -> None:
    curve = staircase_curve()
    lower, _ = wilson_bounds(successes=curve["tp"], trials=curve["n_auto"], sided="one")
    at = {n: lower[curve["n_auto"].to_numpy() == n][0] for n in (100, 110, 310)}
    assert at[100] >= 0.93 > at[110]  # the bound dips below the target ...
    assert at[310] >= 0.93  # ... and comes back: a scan that stops early is wrong
    choice = choose_threshold(curve, target_precision=0.93)
    # past 310 the next 4 negatives still keep the bound above 0.93, the 5th does not
    assert choice.n_auto == 314
    assert choice.tp == 300 and choice.fp == 14
    assert choice.precision == pytest.approx(300 / 314)
    lower_315 = lower[curve["n_auto"].to_numpy() == 315][0]
    assert choice.precision_lower > 0.93 > lower_315
    assert choice.precision_lower >= 0.93
    assert choice.labels_needed is None


def test_the_rule_uses_the_lower_bound_not_the_point_estimate() -> None:
    # 19 of 20 right: point precision 0.95, but the lower bound is far below it
    curve = binary_curve(scores=np.arange(20.0), positive=np.arange(20) != 0, thresholds=[0.0])
    choice = choose_threshold(curve, target_precision=0.9)
    assert curve["precision"].iloc[0] == 0.95
    assert choice.threshold is None
    assert choice.labels_needed is not None and choice.labels_needed > 0


@pytest.mark.parametrize("method", ["wilson", "clopper-pearson"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_proposed_threshold_is_always_backed(method: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.random(3000)
    positive = rng.random(3000) < scores**0.3
    curve = binary_curve(scores=scores, positive=positive)
    choice = choose_threshold(curve, target_precision=0.9, method=method, confidence=0.95)
    assert choice.threshold is not None
    counts = brute_force(scores, positive, choice.threshold, "ge")
    from ml.calibration import proportion_bounds

    lower, _ = proportion_bounds(
        successes=counts["tp"], trials=counts["n_auto"], method=method, sided="one"
    )
    assert float(lower) >= 0.9
    assert counts["n_auto"] == choice.n_auto
    # nothing automates more while backed
    all_lower, _ = proportion_bounds(
        successes=curve["tp"], trials=curve["n_auto"], method=method, sided="one"
    )
    assert curve["n_auto"][all_lower >= 0.9].max() == choice.n_auto


def test_labels_needed_none_when_no_threshold_beats_the_target() -> None:
    curve = binary_curve(scores=[0.9, 0.8, 0.7, 0.6], positive=[True, False, True, False])
    choice = choose_threshold(curve, target_precision=0.99)
    assert choice.threshold is None
    assert choice.labels_needed is not None  # precision 1.0 at 0.9 beats 0.99
    hopeless = binary_curve(scores=[0.9, 0.8], positive=[False, True])
    choice = choose_threshold(hopeless, target_precision=0.99)
    assert choice.threshold is None and choice.labels_needed is None
    assert "will not help" in choice.message


def test_clopper_pearson_needs_more_labels_than_wilson() -> None:
    curve = binary_curve(scores=[0.9, 0.1], positive=[True, False])
    wilson = choose_threshold(curve, target_precision=0.9, method="wilson")
    exact = choose_threshold(curve, target_precision=0.9, method="clopper-pearson")
    # p = 1 on half the items: Wilson needs 25 auto items, Clopper-Pearson
    # ceil(ln 0.05 / ln 0.9) = 29; so 50 and 58 labelled in all
    assert wilson.labels_needed == 48
    assert exact.labels_needed == 56


def test_f_beta_objective_maximises_f_beta() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random(400)
    positive = rng.random(400) < scores
    curve = binary_curve(scores=scores, positive=positive)
    choice = choose_threshold(curve, objective="f_beta", beta=2.0)
    tp, fp, fn = curve["tp"], curve["fp"], curve["fn"]
    f2 = 5 * tp / (5 * tp + 4 * fn + fp)
    assert choice.objective_value == pytest.approx(f2.max())
    assert choice.threshold == curve["threshold"][f2.idxmax()]
    constrained = choose_threshold(curve, objective="f_beta", beta=2.0, target_precision=0.8)
    assert constrained.precision_lower >= 0.8
    assert constrained.objective_value <= choice.objective_value


def test_cost_objective() -> None:
    curve = staircase_curve()
    costs = Costs(false_positive=10.0, false_negative=0.0, routed=1.0)
    choice = choose_threshold(curve, objective="cost", costs=costs)
    total = 10.0 * curve["fp"] + 1.0 * curve["n_routed"]
    assert choice.threshold == curve["threshold"][total.idxmin()]
    assert choice.objective_value == pytest.approx(total.min() / 610)
    assert choice.n_auto == 310  # 10 errors cost less than routing 200 more items
    expensive = choose_threshold(
        curve, objective="cost", costs=Costs(false_positive=1000.0, routed=0.001)
    )
    assert expensive.n_auto == 100
    never = choose_threshold(curve, objective="cost", costs=Costs(false_positive=1.0))
    assert never.threshold is None  # routing is free: automation never pays


def test_choice_needs_its_inputs() -> None:
    curve = staircase_curve()
    with pytest.raises(ValueError, match="target_precision"):
        choose_threshold(curve)
    with pytest.raises(ValueError, match="costs"):
        choose_threshold(curve, objective="cost")
    empty = binary_curve(scores=[], positive=[])
    choice = choose_threshold(empty, target_precision=0.9)
    assert choice.threshold is None and "no labelled items" in choice.message
    assert choice.to_dict()["threshold"] is None


def test_similarity_reuse_distance_on_synthetic_pairs() -> None:
    rng = np.random.default_rng(11)
    distance = rng.random(5000)
    same = rng.random(5000) < np.clip(1.2 - 1.5 * distance, 0, 1)
    pairs = pd.DataFrame({"pair_id": np.arange(5000), "distance": distance, "same": same})
    choice = choose_reuse_distance(pairs, target_precision=0.95)
    assert choice.direction == "le" and choice.threshold is not None
    reused = distance <= choice.threshold
    assert reused.sum() == choice.n_auto
    assert same[reused].mean() == pytest.approx(choice.precision)
    assert choice.precision_lower >= 0.95


def test_reuse_distance_must_hold_for_each_label_reused() -> None:
    """Pooled pairs can back a distance that one label cannot: 900 "action" pairs 99 %
    right over 0–0.3 and 140 "ok" pairs (80 right below 0.05, 60 at 75 % over 0.1–0.3)
    pool to ~97.7 % (bound above 95 %) while reusing an OK verdict within that distance is
    right under 95 % of the time. With ``reused_label`` the distance stops where the OK
    pairs fail it, and each label's bound clears the target there."""
    rng = np.random.default_rng(3)
    n_a = 900
    action = pd.DataFrame({"distance": rng.uniform(0.0, 0.3, n_a),
                           "same": rng.random(n_a) < 0.99, "reused_label": "action"})
    ok = pd.DataFrame({"distance": np.r_[rng.uniform(0.0, 0.05, 80), rng.uniform(0.1, 0.3, 60)],
                       "same": np.r_[np.ones(80, bool), rng.random(60) < 0.75],
                       "reused_label": "ok"})
    pairs = pd.concat([action, ok], ignore_index=True)
    pooled = choose_reuse_distance(pairs[["distance", "same"]], target_precision=0.95)
    assert pooled.threshold is not None and pooled.threshold > 0.29
    ok_reused = (pairs["reused_label"] == "ok") & (pairs["distance"] <= pooled.threshold)
    assert pairs.loc[ok_reused, "same"].mean() < 0.95  # pooling lets OK reuse miss the target
    from ml.calibration import proportion_bounds

    per_label = choose_reuse_distance(pairs, target_precision=0.95)
    assert per_label.threshold is not None and per_label.threshold < pooled.threshold
    for label, part in pairs[pairs["distance"] <= per_label.threshold].groupby("reused_label"):
        lower, _ = proportion_bounds(successes=int(part["same"].sum()), trials=len(part),
                                     sided="one")
        assert lower >= 0.95, label
