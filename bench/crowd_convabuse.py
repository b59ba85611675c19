"""ConvAbuse (8 expert annotators, 2–7 judgements per utterance) replayed through the
Toloka emulator: push → pull → aggregate per method, then dynamic overlap. The
reference is the majority of all annotators (utterances with a tied majority are left out).

    .venv/bin/python bench/crowd_convabuse.py
"""

from __future__ import annotations

import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from crowd_common import dynamic, method_table, replay_all

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "convabuse" / "1_full"
POLICY = [
    {"key": "ok", "title": "Not abusive"},
    {"key": "abusive", "title": "Abusive towards the agent"},
]
SEVERITY = ["is_abuse.1", "is_abuse.0", "is_abuse.-1", "is_abuse.-2", "is_abuse.-3"]


def load(path: Path) -> pd.DataFrame:
    d = pd.read_csv(path / "ConvAbuseEMNLPfull.csv")
    context = (
        d[["conv_id", "prev_agent", "prev_user", "agent", "user"]].astype(str).agg("|".join, axis=1)
    )
    severity = np.array([1, 0, -1, -2, -3])[d[SEVERITY].to_numpy().argmax(axis=1)]
    return pd.DataFrame(
        {
            "task_key": [f"u{zlib.crc32(c.encode()):08x}" for c in context],
            "worker": d["annotator_id"].astype(str),
            "label": np.where(severity < 0, "abusive", "ok"),
        }
    )


def main() -> None:
    labels = load(DATA)
    counts = labels.groupby(["task_key", "label"]).size().unstack(fill_value=0)
    clear = counts[counts.max(axis=1) * 2 > counts.sum(axis=1)]
    reference = clear.idxmax(axis=1)
    print(
        f"judgements {len(labels)}, utterances {labels['task_key'].nunique()}, annotators "
        f"{labels['worker'].nunique()}, "
        f"abusive share {float((reference == 'abusive').mean()):.3f}, "
        f"reference (strict majority) on {len(reference)} utterances"
    )
    per_item = labels.groupby("task_key").size()
    replayed = replay_all(recorded=labels, policy=POLICY, max_overlap=int(per_item.max()))
    answers = replayed.answers
    print(f"replay through emulator: {len(answers)} answers in {replayed.seconds:.1f} s")
    table = method_table(answers, reference)
    print("\nall answers, agreement with the all-annotator majority:")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print("\ndynamic overlap (start 1 or 2, one more at a time while unsure):")
    runs = [
        dynamic(
            recorded=labels,
            policy=POLICY,
            gold=reference,
            method=m,
            target=t,
            start=s,
            max_overlap=int(per_item.max()),
        )
        for m, t, s in (("mv", 0.99, 1), ("mv", 0.99, 2), ("ds", 0.9, 1), ("ds", 0.9, 2))
    ]
    print(pd.DataFrame(runs).to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\ntotal {time.perf_counter() - t0:.1f} s", file=sys.stderr)
