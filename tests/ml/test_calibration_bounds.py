"""Confidence bounds on a proportion: Wilson and Clopper-Pearson, vectorised."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from ml.calibration_bounds import (
    clopper_pearson_bounds,
    lower_bound_clears,
    proportion_bounds,
    required_trials,
    wilson_bounds,
)

CASES = [(0, 5), (1, 10), (8, 10), (10, 10), (37, 40), (950, 1000), (999, 1000)]


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_two_sided_bounds_match_scipy(confidence: float) -> None:
    k = np.array([c[0] for c in CASES])
    n = np.array([c[1] for c in CASES])
    w_lo, w_hi = wilson_bounds(successes=k, trials=n, confidence=confidence)
    cp_lo, cp_hi = clopper_pearson_bounds(successes=k, trials=n, confidence=confidence)
    for i, (ki, ni) in enumerate(CASES):
        wilson = binomtest(ki, ni).proportion_ci(confidence, method="wilson")
        exact = binomtest(ki, ni).proportion_ci(confidence, method="exact")
        assert w_lo[i] == pytest.approx(wilson.low, abs=1e-12)
        assert w_hi[i] == pytest.approx(wilson.high, abs=1e-12)
        assert cp_lo[i] == pytest.approx(exact.low, abs=1e-10)
        assert cp_hi[i] == pytest.approx(exact.high, abs=1e-10)


def test_reference_values() -> None:
    lo, hi = wilson_bounds(successes=8, trials=10)
    assert (round(float(lo), 4), round(float(hi), 4)) == (0.4902, 0.9433)
    lo, hi = clopper_pearson_bounds(successes=8, trials=10)
    assert (round(float(lo), 4), round(float(hi), 4)) == (0.4439, 0.9748)
    # one-sided 95 % on 10/10: Wilson n / (n + z^2), Clopper-Pearson 0.05 ** (1 / n)
    lo, _ = wilson_bounds(successes=10, trials=10, sided="one")
    assert float(lo) == pytest.approx(10 / (10 + 1.6448536269514722**2))
    lo, _ = clopper_pearson_bounds(successes=10, trials=10, sided="one")
    assert float(lo) == pytest.approx(0.05 ** (1 / 10))


@pytest.mark.parametrize("method", ["wilson", "clopper-pearson"])
def test_one_sided_is_two_sided_at_twice_the_tail(method: str) -> None:
    one = proportion_bounds(successes=37, trials=40, confidence=0.95, method=method, sided="one")
    two = proportion_bounds(successes=37, trials=40, confidence=0.90, method=method)
    assert float(one[0]) == pytest.approx(float(two[0]))
    assert float(one[1]) == pytest.approx(float(two[1]))


@pytest.mark.parametrize("method", ["wilson", "clopper-pearson"])
def test_edges_and_shapes(method: str) -> None:
    lo, hi = proportion_bounds(successes=[0, 5, 0], trials=[5, 5, 0], method=method)
    assert lo.shape == hi.shape == (3,)
    assert lo[0] == 0.0 and hi[1] == 1.0
    assert 0.0 < hi[0] < 1.0 and 0.0 < lo[1] < 1.0
    assert math.isnan(lo[2]) and math.isnan(hi[2])  # 0 trials: undefined
    with pytest.raises(ValueError):
        proportion_bounds(successes=[6], trials=[5], method=method)
    with pytest.raises(ValueError, match="method"):
        proportion_bounds(successes=1, trials=2, method="agresti")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="confidence"):
        proportion_bounds(successes=1, trials=2, confidence=95, method=method)


def test_bounds_are_vectorised_over_a_million() -> None:
    rng = np.random.default_rng(0)
    n = rng.integers(1, 10_000, 1_000_000)
    k = rng.binomial(n, 0.9)
    lo, hi = wilson_bounds(successes=k, trials=n, sided="one")
    assert lo.shape == (1_000_000,)
    assert np.all(lo <= k / n) and np.all(hi >= k / n)


@pytest.mark.parametrize("method", ["wilson", "clopper-pearson"])
@pytest.mark.parametrize("p,target", [(1.0, 0.9), (1.0, 0.99), (0.97, 0.95), (0.995, 0.99)])
def test_required_trials_is_the_smallest_n(method: str, p: float, target: float) -> None:
    (n,) = required_trials(proportion=p, target=target, method=method)
    assert np.isfinite(n)
    at_n, _ = proportion_bounds(successes=p * n, trials=n, method=method, sided="one")
    before, _ = proportion_bounds(successes=p * (n - 1), trials=n - 1, method=method, sided="one")
    assert float(at_n) >= target > float(before)


def test_required_trials_closed_forms_and_unreachable() -> None:
    # p = 1: Wilson n >= z^2 t / (1 - t); Clopper-Pearson n >= ln(alpha) / ln(t)
    z2 = 1.6448536269514722**2
    assert required_trials(proportion=1.0, target=0.99)[0] == math.ceil(z2 * 99)
    assert required_trials(proportion=1.0, target=0.99, method="clopper-pearson")[0] == (
        math.ceil(math.log(0.05) / math.log(0.99))
    )
    assert np.isinf(required_trials(proportion=[0.9, 0.5], target=0.9)).all()


@pytest.mark.parametrize("method", ["wilson", "clopper-pearson"])
def test_lower_bound_clears_agrees_with_the_bound(method: str) -> None:
    rng = np.random.default_rng(5)
    n = rng.integers(0, 3000, 20_000)
    k = rng.binomial(n, 0.97)
    lower, _ = proportion_bounds(successes=k, trials=n, method=method, sided="one")
    expected = np.nan_to_num(lower, nan=-1.0) >= 0.95
    got = lower_bound_clears(successes=k, trials=n, target=0.95, method=method)
    assert got.sum() > 0 and (~got).sum() > 0
    assert np.array_equal(got, expected)
