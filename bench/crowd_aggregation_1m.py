"""Aggregation at scale (issue #13 item 6): Quorum's `crowd.aggregation.aggregate` against
crowd-kit alone on integer columns, 1,000,000 answers (333,334 items × 3, 3,000 workers,
string ids and labels as Quorum receives them). Target: within 2× of crowd-kit alone.

    .venv/bin/python bench/crowd_aggregation_1m.py [--answers 1000000] [--methods mv,ds]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

from crowdkit.aggregation import DawidSkene, MajorityVote  # noqa: E402

from crowd.aggregation import aggregate  # noqa: E402

LABELS = np.array(["ok", "restricted", "adult", "prohibited"], dtype=object)


def make_answers(n_answers: int, *, workers: int = 3000, overlap: int = 3, seed: int = 0
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """String answers (what Quorum gets) and the same as integer codes (crowd-kit's best)."""
    rng = np.random.default_rng(seed)
    n_items = -(-n_answers // overlap)
    truth = rng.choice(4, size=n_items, p=[0.7, 0.15, 0.1, 0.05])
    task = np.repeat(np.arange(n_items), overlap)[:n_answers]
    worker = rng.integers(0, workers, size=n_answers)
    skill = rng.uniform(0.6, 0.95, size=workers)[worker]
    right = rng.random(n_answers) < skill
    label = np.where(right, truth[task], (truth[task] + rng.integers(1, 4, n_answers)) % 4)
    coded = pd.DataFrame({"task": task, "worker": worker, "label": label})
    strings = pd.DataFrame({
        "task": pd.Series(task).map("item-{:07d}".format),
        "worker": pd.Series(worker).map("w{:05d}".format),
        "label": LABELS[label],
    })
    return strings, coded


def crowdkit_alone(method: str, coded: pd.DataFrame) -> None:
    if method == "mv":
        MajorityVote().fit_predict_proba(coded)
    else:
        DawidSkene(n_iter=100).fit(coded).probas_  # noqa: B018


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--answers", type=int, default=1_000_000)
    parser.add_argument("--methods", default="mv,ds")
    args = parser.parse_args()
    strings, coded = make_answers(args.answers)
    print(f"{len(strings):,} answers, {strings['task'].nunique():,} items, "
          f"{strings['worker'].nunique():,} workers")
    print(f"{'method':8} {'crowd-kit alone (int) s':>24} {'Quorum aggregate (str) s':>25} "
          f"{'ratio':>6}")
    for method in args.methods.split(","):
        alone = timed(lambda m=method: crowdkit_alone(m, coded))
        ours = timed(lambda m=method: aggregate(strings, method=m, target_confidence=0.8,
                                                min_answers=2))
        print(f"{method:8} {alone:24.2f} {ours:25.2f} {ours / alone:6.2f}")


if __name__ == "__main__":
    main()
