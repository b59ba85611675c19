"""Choosing a PDQ distance by precision with a lower confidence bound."""

from __future__ import annotations

from ml.hash_calibration import choose_distance, distance_curve


def test_the_largest_distance_whose_bound_clears_the_target() -> None:
    # 40 right matches within 10 bits, then wrong ones from 20 bits on
    dists = [3] * 20 + [10] * 20 + [20] * 5 + [40] * 30
    right = [True] * 40 + [False] * 35
    curve = distance_curve(dists, right, max_distance=64)
    assert list(curve.loc[[2, 3, 10, 19, 20, 64], "n_auto"]) == [0, 20, 40, 40, 45, 75]
    assert curve.loc[10, "precision"] == 1.0 and curve.loc[20, "precision"] == 40 / 45
    chosen = choose_distance(curve, target=0.9, n_labelled=100, fallback=31)
    assert chosen["backed"] and chosen["threshold"] == 19  # 20 brings the wrong ones
    assert chosen["n_auto"] == 40 and chosen["lower"] >= 0.9
    none = choose_distance(curve, target=0.99, n_labelled=100, fallback=31)
    assert not none["backed"] and none["threshold"] == 31 and none["n_auto"] == 45
    empty = choose_distance(distance_curve([], []), target=0.9, n_labelled=0, fallback=16)
    assert empty == {"threshold": 16, "backed": False, "target": 0.9, "precision": None,
                     "lower": None, "n_auto": 0, "n_labelled": 0}
