"""The library flow (`crowd.flow.run_flow`: push → work → rounds of pull / review /
aggregate) against the plain emulator and against one that behaves like a busy real
pool (`Realism.real_pool()`: ACTIVE, SKIPPED and EXPIRED suites, PENDING operations,
10% 429s, the pool's quality control evaluated), same seed, same simulated workers.

    .venv/bin/python bench/crowd_realism.py [--items 300] [--workers 30] [--seed 0]

Prints per run: wall time, rounds, HTTP calls and 429s, suites by final status, paid
answers per item, the share of items decided and their accuracy against the simulated
truth, workers banned (and by whom), and how many decisions differ between the runs.
Machine: 2 shared cores, timings are noisy; toloka-kit's ``wait_operation`` sleeps
1 s per poll of a still-running operation, which dominates the realistic run's time.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from collections import Counter

import pandas as pd

warnings.filterwarnings("ignore")

from crowd.config import CrowdConfig  # noqa: E402
from crowd.emulator import Emulator, Realism  # noqa: E402
from crowd.flow import run_flow  # noqa: E402
from crowd.push import PushPlan  # noqa: E402
from crowd.store import MemoryStore  # noqa: E402
from crowd.toloka import make_client  # noqa: E402

LABELS = ["ok", "restricted", "adult", "prohibited"]


def run(n_items: int, n_workers: int, seed: int, realism: Realism | None, qc: str) -> dict:
    truth = {f"item-{i:05d}": LABELS[(i * 7) % 4] for i in range(n_items)}
    items = pd.DataFrame({"item_id": list(truth), "title": "a listing"})
    golden = pd.DataFrame({"item_id": [f"gold-{i}" for i in range(20)], "title": "control",
                           "label": [LABELS[i % 4] for i in range(20)]})
    plan = PushPlan(key="bench", policy=[{"key": k} for k in LABELS], items=items,
                    golden=golden,
                    config=CrowdConfig(tasks_per_suite=5, aggregation="mv",
                                       quality_control=qc))
    with Emulator(seed=seed, workers=n_workers, truth=truth, realism=realism) as emu:
        client = make_client(url=emu.url, retries=8, backoff=0.01)
        start = time.perf_counter()
        result = run_flow(client, plan=plan, store=MemoryStore(), wait=emu.work)
        wall = time.perf_counter() - start
        statuses = Counter(a["status"] for a in emu.state.assignments.values())
        calls = Counter(status for _, _, status in emu.requests)
        restricted = len(emu.state.restrictions)
    v = result.verdicts
    decided = v[v["status"] == "decided"]
    paid = result.valid[~result.valid["is_golden"].astype(bool)]
    return {
        "wall_s": round(wall, 1),
        "rounds": len(result.rounds),
        "http_calls": sum(calls.values()),
        "http_429": calls[429],
        "suites": dict(sorted(statuses.items())),
        "answers_per_item": round(len(paid) / n_items, 2),
        "decided": round(len(decided) / n_items, 3),
        "accuracy": round(float((decided["label"] == decided["task"].map(truth)).mean()), 3),
        "banned": len(result.banned),
        "restrictions_on_toloka": restricted,
        "verdicts": v.set_index("task")["label"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--workers", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runs = {
        "plain (quorum bans)": run(args.items, args.workers, args.seed, None, "quorum"),
        "429s + pending ops": run(args.items, args.workers, args.seed,
                                  Realism(too_many_requests=0.1, pending_polls=1), "quorum"),
        "real pool (toloka bans)": run(args.items, args.workers, args.seed,
                                       dataclasses.replace(Realism.real_pool(),
                                                           pending_polls=1), "toloka"),
    }
    base = runs["plain (quorum bans)"]["verdicts"]
    for name, r in runs.items():
        differ = int((r.pop("verdicts").reindex(base.index) != base).sum())
        print(f"{name:26s} " + " ".join(f"{k}={v}" for k, v in r.items())
              + f" decisions_differing_from_plain={differ}")


if __name__ == "__main__":
    main()
