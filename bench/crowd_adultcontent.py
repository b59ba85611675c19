"""AdultContent2 (92,721 real MTurk answers, 11,040 sites, G/P/R/X, 333 gold) replayed
through the Toloka emulator: push → pull → aggregate per method, then dynamic overlap.

    .venv/bin/python bench/crowd_adultcontent.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
from crowd_common import dynamic, method_table, replay_all

DATA = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "gal_adultcontent"
    / "AdultContent2"
)
POLICY = [
    {"key": "G", "title": "OK (general audience)"},
    {"key": "P", "title": "Restricted (parental guidance)"},
    {"key": "R", "title": "Restricted (R)"},
    {"key": "X", "title": "Adult"},
]


def load(data: Path) -> tuple[pd.DataFrame, pd.Series]:
    labels = pd.read_csv(
        data / "labels.txt", sep="\t", names=["worker", "task_key", "label"], dtype=str
    )
    gold = pd.read_csv(data / "gold.txt", sep="\t", names=["task_key", "label"], dtype=str)
    gold = gold[gold["task_key"].isin(labels["task_key"])].drop_duplicates("task_key")
    return labels, pd.Series(gold["label"].to_numpy(), index=gold["task_key"].to_numpy())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--quick", action="store_true", help="skip GLAD and the DS dynamic run")
    args = parser.parse_args()
    labels, gold = load(args.data)
    unique = labels.drop_duplicates(["task_key", "worker"])
    print(
        f"answers {len(labels)} (unique worker×site {len(unique)}), "
        f"sites {labels['task_key'].nunique()}, "
        f"workers {labels['worker'].nunique()}, gold sites with answers {len(gold)}"
    )
    per_item = unique.groupby("task_key").size()
    replayed = replay_all(recorded=labels, policy=POLICY, max_overlap=int(per_item.max()))
    answers = replayed.answers
    print(
        f"replay through emulator (push {answers['task'].nunique()} tasks, work, pull): "
        f"{len(answers)} answers in {replayed.seconds:.1f} s; "
        f"answers per item {len(answers) / answers['task'].nunique():.2f}"
    )
    methods = (
        ("mv", "wawa", "ds", "gold_mv") if args.quick else ("mv", "wawa", "ds", "glad", "gold_mv")
    )
    table = method_table(answers, gold, methods=methods)
    print("\nall answers, accuracy on gold:")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print("\ndynamic overlap (start 2 answers, one more at a time while unsure, cap 10):")
    runs = []
    for method, target in (("mv", 0.7), ("mv", 0.8)) + (
        () if args.quick else (("ds", 0.9), ("ds", 0.99))
    ):
        runs.append(
            dynamic(
                recorded=labels,
                policy=POLICY,
                gold=gold,
                method=method,
                target=target,
                start=2,
                max_overlap=10,
            )
        )
        print(
            pd.DataFrame(runs[-1:]).to_string(
                index=False, header=len(runs) == 1, float_format=lambda x: f"{x:.3f}"
            ),
            flush=True,
        )


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\ntotal {time.perf_counter() - t0:.1f} s", file=sys.stderr)
