"""Confidence bounds on a proportion (precision, agreement rate), vectorised.

Two methods:

- ``"wilson"``: the Wilson score interval (no continuity correction). Close to
  nominal coverage, cheap (closed form), the default.
- ``"clopper-pearson"``: the exact interval from Beta quantiles. Conservative
  (coverage at least the nominal level), slower (``scipy.stats.beta.ppf``).

``sided`` says how the confidence level is spent:

- ``"two"`` (default): ``[lower, upper]`` is a two-sided interval at ``confidence``
  (each tail gets ``(1 - confidence) / 2``), what ``scipy.stats.binomtest(...)
  .proportion_ci`` returns. Use it to *show* an interval.
- ``"one"``: ``lower`` and ``upper`` are each a one-sided bound at ``confidence``
  (each tail gets ``1 - confidence``): "we are 95 % confident precision is at least
  ``lower``". Threshold choice uses this one.

With ``trials == 0`` the proportion is undefined and both bounds are NaN.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import special, stats

Method = Literal["wilson", "clopper-pearson"]
Sided = Literal["two", "one"]

METHODS: tuple[str, ...] = ("wilson", "clopper-pearson")


def _tail(*, confidence: float, sided: Sided) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if sided == "two":
        return (1.0 - confidence) / 2.0
    if sided == "one":
        return 1.0 - confidence
    raise ValueError(f"sided must be 'two' or 'one', got {sided!r}")


def _counts(successes: ArrayLike, trials: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    k, n = np.broadcast_arrays(k, n)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("need 0 <= successes <= trials")
    return k, n


def wilson_bounds(
    *, successes: ArrayLike, trials: ArrayLike, confidence: float = 0.95, sided: Sided = "two"
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score bounds ``(lower, upper)`` for ``successes / trials``, elementwise.

    Non-integer ``successes`` are accepted (used by :func:`required_trials`).
    """
    k, n = _counts(successes, trials)
    z = float(stats.norm.ppf(1.0 - _tail(confidence=confidence, sided=sided)))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        z2n = z * z / n
        center = (p + z2n / 2.0) / (1.0 + z2n)
        half = z / (1.0 + z2n) * np.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
        lower = np.clip(center - half, 0.0, 1.0)
        upper = np.clip(center + half, 0.0, 1.0)
    lower = np.where(k == 0, 0.0, lower)
    upper = np.where(k == n, 1.0, upper)
    empty = n == 0
    return np.where(empty, np.nan, lower), np.where(empty, np.nan, upper)


def clopper_pearson_bounds(
    *, successes: ArrayLike, trials: ArrayLike, confidence: float = 0.95, sided: Sided = "two"
) -> tuple[np.ndarray, np.ndarray]:
    """Clopper–Pearson (exact, Beta-quantile) bounds ``(lower, upper)``, elementwise."""
    k, n = _counts(successes, trials)
    tail = _tail(confidence=confidence, sided=sided)
    with np.errstate(divide="ignore", invalid="ignore"):
        lower = stats.beta.ppf(tail, np.where(k > 0, k, 1.0), n - k + 1.0)
        upper = stats.beta.ppf(1.0 - tail, k + 1.0, np.where(k < n, n - k, 1.0))
    lower = np.where(k == 0, 0.0, lower)
    upper = np.where(k == n, 1.0, upper)
    empty = n == 0
    return np.where(empty, np.nan, lower), np.where(empty, np.nan, upper)


def proportion_bounds(
    *,
    successes: ArrayLike,
    trials: ArrayLike,
    confidence: float = 0.95,
    method: Method = "wilson",
    sided: Sided = "two",
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch to :func:`wilson_bounds` or :func:`clopper_pearson_bounds` by ``method``."""
    if method == "wilson":
        return wilson_bounds(successes=successes, trials=trials, confidence=confidence, sided=sided)
    if method == "clopper-pearson":
        return clopper_pearson_bounds(
            successes=successes, trials=trials, confidence=confidence, sided=sided
        )
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def lower_bound_clears(
    *,
    successes: ArrayLike,
    trials: ArrayLike,
    target: float,
    confidence: float = 0.95,
    method: Method = "wilson",
) -> np.ndarray:
    """Whether the one-sided lower bound at ``confidence`` is ``>= target``, elementwise.

    Same answer as ``proportion_bounds(..., sided="one")[0] >= target`` (False where
    ``trials == 0``), but Clopper–Pearson is tested through the Beta CDF
    (``lower >= target`` iff ``I_target(k, n - k + 1) <= alpha``), about 100 times
    faster than inverting it: 10^6 rows in ~0.1 s.
    """
    if method == "clopper-pearson":
        k, n = _counts(successes, trials)
        alpha = _tail(confidence=confidence, sided="one")
        with np.errstate(invalid="ignore"):
            tail = special.betainc(np.maximum(k, 1.0), n - k + 1.0, target)
        return (k > 0) & (n > 0) & (tail <= alpha)
    lower, _ = proportion_bounds(
        successes=successes, trials=trials, confidence=confidence, method=method, sided="one"
    )
    return np.nan_to_num(lower, nan=-1.0) >= target


def required_trials(
    *,
    proportion: ArrayLike,
    target: float,
    confidence: float = 0.95,
    method: Method = "wilson",
    max_trials: int = 10**12,
) -> np.ndarray:
    """Smallest ``n`` whose one-sided lower bound clears ``target`` if ``proportion`` holds.

    For each observed proportion ``p``, the smallest integer ``n`` such that the
    one-sided lower bound at ``confidence`` for ``p * n`` successes out of ``n``
    is ``>= target``. Where ``p <= target`` no ``n`` is enough and the result is
    ``inf`` (also when it would exceed ``max_trials``). Float array, integral
    values. Assumes the bound grows with ``n`` at fixed ``p`` (true for both
    methods when ``p > target``).
    """
    p = np.atleast_1d(np.asarray(proportion, dtype=np.float64))
    reachable = p > target
    out = np.full(p.shape, np.inf)
    if not reachable.any():
        return out
    q = p[reachable]

    def clears(n: np.ndarray) -> np.ndarray:
        return lower_bound_clears(
            successes=q * n, trials=n, target=target, confidence=confidence, method=method
        )

    hi = np.ones(q.shape)
    while True:
        ok = clears(hi)
        grow = ~ok & (hi < max_trials)
        if not grow.any():
            break
        hi = np.where(grow, np.minimum(hi * 2.0, max_trials), hi)
    found = clears(hi)
    lo = np.where(hi > 1, np.floor(hi / 2.0), 0.0)  # clears(lo) is False (or lo == 0)
    while np.any(hi - lo > 1):
        mid = np.floor((lo + hi) / 2.0)
        ok = clears(np.maximum(mid, 1.0))
        hi = np.where(ok & (mid >= 1), mid, hi)
        lo = np.where(ok & (mid >= 1), lo, mid)
    out[reachable] = np.where(found, hi, np.inf)
    return out
