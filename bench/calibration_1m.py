"""Curve + threshold choice on 1,000,000 labelled scores (target: well under 5 s).

Run from the repository root::

    .venv/bin/python bench/calibration_1m.py [--n 1000000] [--repeats 5]

Prints the median wall time of each step over ``--repeats`` runs: building the curve
on all distinct scores (~10^6 rows), choosing a threshold with Wilson and with
Clopper-Pearson bounds, F-beta and cost objectives, and a what-if on 300,000 items.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ml.calibration import Costs, binary_curve, choose_threshold, what_if  # noqa: E402


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    scores = rng.random(args.n)
    positive = rng.random(args.n) < scores**0.25  # precision rises with the score
    today = rng.random(300_000)

    t_curve, curve = timed(lambda: binary_curve(scores=scores, positive=positive), args.repeats)
    print(f"n = {args.n:,} labelled scores, {len(curve):,} candidate thresholds")
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("choose wilson 0.99", lambda: choose_threshold(curve, target_precision=0.99)),
        (
            "choose clopper-pearson 0.99",
            lambda: choose_threshold(curve, target_precision=0.99, method="clopper-pearson"),
        ),
        ("choose f_beta", lambda: choose_threshold(curve, objective="f_beta", beta=0.5)),
        (
            "choose cost",
            lambda: choose_threshold(
                curve, objective="cost", costs=Costs(false_positive=1.0, routed=0.05)
            ),
        ),
    ]
    print(f"  {'binary_curve':<30} median {t_curve:7.3f} s")
    total = t_curve
    for name, fn in steps:
        elapsed, choice = timed(fn, args.repeats)
        total += elapsed
        print(
            f"  {name:<30} median {elapsed:7.3f} s  -> threshold {choice.threshold:.6f}, "
            f"n_auto {choice.n_auto:,}, precision {choice.precision:.4f}, "
            f"lower bound {choice.precision_lower:.4f}"
        )
    chosen = choose_threshold(curve, target_precision=0.99).threshold
    elapsed, result = timed(
        lambda: what_if(
            scores=today, curve=curve, thresholds=chosen, cost_per_item=0.01, overlap=3
        ),
        args.repeats,
    )
    print(f"  {'what_if on 300,000 items':<30} median {elapsed:7.3f} s  -> auto {result.n_auto:,}")
    print(
        f"curve + wilson choice: {t_curve + timed(steps[0][1], 1)[0]:.3f} s; "
        f"all steps: {total + elapsed:.3f} s"
    )


if __name__ == "__main__":
    main()
