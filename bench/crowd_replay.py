"""The crowd path on real recorded answers, through `crowd.replay.replay` — what
``quorum crowd replay FILE`` runs — against majority vote over every recorded answer.

    .venv/bin/python bench/crowd_replay.py [adultcontent|convabuse] [--configs NAME,...]
        [--write FILE.csv]   # also write the recording in replay format

AdultContent2 is scored on its gold sites (half of them serve as control tasks when
the configuration has any); ConvAbuse has no gold: the reference is the strict majority
of all annotators (ties left out), so all-answer majority vote is right by definition
there and the figure that matters is answers per item. Accuracy counts the crowd's
decisions; the share sent to people is printed beside it. Machine: 2 shared cores,
timings are noisy.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import pandas as pd

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import crowd_adultcontent  # noqa: E402
import crowd_convabuse  # noqa: E402

from crowd.config import CrowdConfig  # noqa: E402
from crowd.replay import ReplayReport, replay  # noqa: E402

#: Configurations compared (the product's defaults first).
CONFIGS = {
    "defaults": CrowdConfig(),
    "mv-0.8": CrowdConfig(aggregation="mv"),
    "mv-0.8-cap7": CrowdConfig(aggregation="mv", max_overlap=7),
    "ds-0.9": CrowdConfig(aggregation="ds", target_confidence=0.9),
    "no-control-mv": CrowdConfig(aggregation="mv", golden_per_suite=0),
    "sds-0.9": CrowdConfig(aggregation="sds", target_confidence=0.9),
    "sds-0.95-cap7": CrowdConfig(aggregation="sds", target_confidence=0.95, max_overlap=7),
    "sds-0.9-ban90": CrowdConfig(aggregation="sds", target_confidence=0.9,
                                 golden_ban_confidence=0.9),
    # calibrated stopping (issue #13 item 2): start at one answer, buy the next while the
    # posterior is under the target; control tasks: 5 per pool (at most 5 per worker)
    "post-0.9": CrowdConfig(aggregation="sds", overlap=1, min_answers=1, max_overlap=7,
                            target_confidence=0.9, golden_per_worker=5),
    "post-0.95": CrowdConfig(aggregation="sds", overlap=1, min_answers=1, max_overlap=7,
                             target_confidence=0.95, golden_per_worker=5),
    "post-0.99": CrowdConfig(aggregation="sds", overlap=1, min_answers=1, max_overlap=9,
                             target_confidence=0.99, golden_per_worker=5),
    "post-0.95-gold-rate": CrowdConfig(aggregation="sds", overlap=1, min_answers=1,
                                       max_overlap=7, target_confidence=0.95),
    # per-worker control tasks (issue #13 #4): the same control set, but a control task
    # only at a worker's 1st and 11th task in the project, then one every 100 tasks
    "post-0.95-sched": CrowdConfig(aggregation="sds", overlap=1, min_answers=1,
                                   max_overlap=7, target_confidence=0.95,
                                   golden_schedule=((0, 19, 10), (20, 1_000_000, 100))),
    # few control answers per worker: ban on the Beta bound, not on 1 wrong of 3
    "post-0.95-sched-ban90": CrowdConfig(aggregation="sds", overlap=1, min_answers=1,
                                         max_overlap=7, target_confidence=0.95,
                                         golden_ban_confidence=0.9,
                                         golden_schedule=((0, 19, 10), (20, 1_000_000, 100))),
    "post-0.95-gold-rate-ban90": CrowdConfig(aggregation="sds", overlap=1, min_answers=1,
                                             max_overlap=7, target_confidence=0.95,
                                             golden_ban_confidence=0.9),
    "post-0.99-sched": CrowdConfig(aggregation="sds", overlap=1, min_answers=1,
                                   max_overlap=9, target_confidence=0.99,
                                   golden_schedule=((0, 19, 10), (20, 1_000_000, 100))),
    "post-0.99-gold-rate": CrowdConfig(aggregation="sds", overlap=1, min_answers=1,
                                       max_overlap=9, target_confidence=0.99),
    # the posterior tempered on the control tasks (CrowdConfig.temper_min_gold)
    "post-0.95-gold-rate-tempered": CrowdConfig(aggregation="sds", overlap=1, min_answers=1,
                                                max_overlap=7, target_confidence=0.95,
                                                temper_min_gold=30),
    "post-0.99-gold-rate-tempered": CrowdConfig(aggregation="sds", overlap=1, min_answers=1,
                                                max_overlap=9, target_confidence=0.99,
                                                temper_min_gold=30),
    "post-0.999-gold-rate": CrowdConfig(aggregation="sds", overlap=1, min_answers=1,
                                        max_overlap=9, target_confidence=0.999),
    "post-0.999-gold-rate-tempered": CrowdConfig(aggregation="sds", overlap=1,
                                                 min_answers=1, max_overlap=9,
                                                 target_confidence=0.999,
                                                 temper_min_gold=30),
    "post-0.995-gold-rate": CrowdConfig(aggregation="sds", overlap=1, min_answers=1,
                                        max_overlap=9, target_confidence=0.995),
    # lone answers in the worker matrices (CrowdConfig.lone_answers)
    "post-0.95-sched-lone": CrowdConfig(aggregation="sds", overlap=1, min_answers=1,
                                        max_overlap=7, target_confidence=0.95,
                                        golden_schedule=((0, 19, 10), (20, 1_000_000, 100)),
                                        lone_answers=True),
    "post-0.95-gold-rate-lone": CrowdConfig(aggregation="sds", overlap=1, min_answers=1,
                                            max_overlap=7, target_confidence=0.95,
                                            lone_answers=True),
    "post-0.95-gold-rate-tempered-lone": CrowdConfig(
        aggregation="sds", overlap=1, min_answers=1, max_overlap=7, target_confidence=0.95,
        temper_min_gold=30, lone_answers=True),
    "post-0.99-gold-rate-lone": CrowdConfig(aggregation="sds", overlap=1, min_answers=1,
                                            max_overlap=9, target_confidence=0.99,
                                            lone_answers=True),
    "post-0.995-gold-rate-lone": CrowdConfig(aggregation="sds", overlap=1, min_answers=1,
                                             max_overlap=9, target_confidence=0.995,
                                             lone_answers=True),
    "post-0.995-gold-rate-tempered-lone": CrowdConfig(
        aggregation="sds", overlap=1, min_answers=1, max_overlap=9, target_confidence=0.995,
        temper_min_gold=30, lone_answers=True),
    "post-0.9-gold-rate-tempered": CrowdConfig(aggregation="sds", overlap=1, min_answers=1,
                                               max_overlap=7, target_confidence=0.9,
                                               temper_min_gold=30),
}


RELIABILITY = False
BY_CLASS = False


def recording(name: str) -> pd.DataFrame:
    if name == "adultcontent":
        labels, gold = crowd_adultcontent.load(crowd_adultcontent.DATA)
        rec = labels.rename(columns={"task_key": "item"})
        rec["gold"] = rec["item"].map(gold)
        return rec
    labels = crowd_convabuse.load(crowd_convabuse.DATA)
    counts = labels.groupby(["task_key", "label"]).size().unstack(fill_value=0)
    reference = counts[counts.max(axis=1) * 2 > counts.sum(axis=1)].idxmax(axis=1)
    rec = labels.rename(columns={"task_key": "item"})
    rec["gold"] = rec["item"].map(reference)
    return rec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", choices=["adultcontent", "convabuse"], nargs="?",
                        default="adultcontent")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", type=Path)
    parser.add_argument("--history", action="store_true",
                        help="replay half the items first as an earlier pool; the second "
                        "half (scored) reads its answers, as the backend's pools do")
    parser.add_argument("--shared", type=Path, help="the shared data folder (default: "
                        "../shared/data next to the repository)")
    parser.add_argument("--reliability", action="store_true",
                        help="print the reliability table of each row's stated confidence")
    parser.add_argument("--by-class", action="store_true",
                        help="accuracy per reference class, and reweighted to the items' "
                        "class mix (MV-all's labels), beside MV-all's")
    args = parser.parse_args()
    global RELIABILITY, BY_CLASS
    RELIABILITY, BY_CLASS = args.reliability, args.by_class
    if args.shared:
        crowd_adultcontent.DATA = args.shared / "gal_adultcontent" / "AdultContent2"
        crowd_convabuse.DATA = args.shared / "convabuse" / "1_full"
    rec = recording(args.data)
    if args.write:
        rec.to_csv(args.write, index=False)
    print(f"{args.data}: {len(rec)} answers, {rec['item'].nunique()} items, "
          f"{rec['worker'].nunique()} workers, {rec.dropna(subset=['gold'])['item'].nunique()} "
          "with gold/reference")
    cols = ("config", "accuracy", "to people", "answers/item", "+control/item", "cost $",
            "rounds", "MV-all acc.", "DS-all acc.", "MV-all answers/item", "share of MV-all",
            "seconds")
    print(" | ".join(cols))
    for name in args.configs.split(","):
        context = None
        run = rec
        if args.history:
            items = pd.Series(rec["item"].unique()).sample(frac=1.0, random_state=args.seed)
            first = set(items.iloc[: len(items) // 2])
            earlier = replay(rec[rec["item"].isin(first)], config=CONFIGS[name],
                             seed=args.seed)
            context, run = earlier.flow.valid, rec[~rec["item"].isin(first)]
            alone = replay(run, config=CONFIGS[name], seed=args.seed)
            _row(f"{name} (second half alone)", alone.report)
            name = f"{name} (second half, reading the first's answers)"
        done = replay(run, config=CONFIGS[name.split(" ")[0]], seed=args.seed,
                      context=context)
        _row(name, done.report)
        if BY_CLASS:
            _by_class(done, run)


def _row(name: str, r: ReplayReport) -> None:
    print(" | ".join([
        name, f"{r.accuracy:.3f}", f"{r.to_people:.1%}", f"{r.answers_per_item:.2f}",
        f"{r.control_answers_per_item:.2f}", f"{r.cost:.2f}", str(r.rounds),
        f"{r.mv_all_accuracy:.3f}", f"{r.ds_all_accuracy:.3f}",
        f"{r.mv_all_answers_per_item:.2f}",
        f"{(r.answers_per_item + r.control_answers_per_item) / r.mv_all_answers_per_item:.0%}",
        f"{r.seconds:.0f}"]), flush=True)
    if RELIABILITY:
        for row in r.reliability:
            print(f"    stated {row['bin']}: n={row['n']} stated {row['stated']:.3f} right "
                  f"{row['right']:.3f} [{row['low']:.3f}, {row['high']:.3f}]", flush=True)


def _by_class(done, rec: pd.DataFrame) -> None:  # noqa: ANN001
    """Accuracy of the decisions per reference class, and reweighted to the items' class
    mix (MV-all's labels over every item): a reference set whose class mix is not the
    items' (AdultContent2's gold: 56% G, against 86% of the sites by MV-all) scores a
    model on the wrong mix. MV-all's figures beside, on the same items."""
    from crowd.aggregation import aggregate

    ref = done.scored
    verdicts = done.flow.verdicts.set_index("task").reindex(ref.index)
    decided = verdicts["status"] == "decided"
    everything = rec.drop_duplicates(["item", "worker"]).rename(columns={"item": "task"})
    mv = aggregate(everything, method="mv").set_index("task")["label"]
    mix = mv.value_counts(normalize=True)
    rows = []
    for cls, group in ref.groupby(ref):
        d = decided.reindex(group.index)
        crowd_right = (verdicts["label"].reindex(group.index) == group)[d]
        mv_right = mv.reindex(group.index) == group
        rows.append((cls, len(group), int(d.sum()), crowd_right.mean() if d.any() else float("nan"),
                     mv_right.mean(), float(mix.get(cls, 0.0))))
    for cls, n, nd, acc, mv_acc, share in rows:
        print(f"    class {cls}: {n} reference items, {nd} decided, crowd {acc:.3f}, MV-all "
              f"{mv_acc:.3f}; {share:.1%} of the items (MV-all)", flush=True)
    w = sum(share for *_, share in rows)
    crowd_w = sum(share * acc for *_, acc, _, share in rows if acc == acc) / w
    mv_w = sum(share * mv_acc for *_, mv_acc, share in rows) / w
    print(f"    reweighted to the items' class mix: crowd {crowd_w:.3f}, MV-all {mv_w:.3f}",
          flush=True)


if __name__ == "__main__":
    main()
