"""The classifier's prior on answers bought: the Davidson tweets through `crowd.replay`.

    .venv/bin/python bench/crowd_davidson.py [--items 4000] [--target 0.95]
        [--shared ../shared/data]

``../shared/data/davidson_hate_offensive/labeled_data.csv`` carries per tweet the votes
of CrowdFlower annotators (``hate_speech``, ``offensive_language``, ``neither``; mostly 3
per tweet) and the majority ``class``, but no worker ids. Workers are simulated *matched
to those counts*: each tweet's recorded votes are handed to distinct workers drawn (seeded)
from a pool of 200 synthetic ids, so the replay's crowd gives exactly the recorded votes
and no others (a tweet whose votes run out goes to people). The reference is ``class``.

The classifier: TF-IDF (1–2-grams) + logistic regression, scores out of fold (5-fold, the
whole file) — the calibrated score the backend stores for an item it sent to the crowd.
A random sample of ``--items`` tweets is replayed (calibrated stopping: ``sds``, one answer
to start, buy the next while the posterior is under ``--target``, control tasks: 5 per
pool) three times in one run: the classifier ignored (the crowd's base rate as the
prior), its score as the item's prior, its output as one more annotator. Printed: answers
bought per tweet (all, and on the tweets the classifier is unsure of: top score < 0.9),
accuracy of the crowd's decisions, share sent to people. Machine: 2 shared cores.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crowd.config import CrowdConfig  # noqa: E402
from crowd.replay import replay  # noqa: E402

NAMES = {"hate_speech": "hate", "offensive_language": "offensive", "neither": "ok"}
CLASSES = {0: "hate", 1: "offensive", 2: "ok"}


def load(path: Path) -> pd.DataFrame:
    d = pd.read_csv(path)
    d = d.rename(columns={d.columns[0]: "id"})
    d["item"] = "t" + d["id"].astype(str)
    d["gold"] = d["class"].map(CLASSES)
    return d


def recording(d: pd.DataFrame, *, n_workers: int = 200, seed: int = 0) -> pd.DataFrame:
    """One row per recorded vote, each tweet's votes on distinct simulated workers."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in d.itertuples():
        votes = [NAMES[c] for c in NAMES for _ in range(int(getattr(r, c)))]
        workers = rng.choice(n_workers, size=len(votes), replace=False)
        rows += [(r.item, f"cf{w:03d}", v, r.gold) for v, w in zip(votes, workers, strict=True)]
    return pd.DataFrame(rows, columns=["item", "worker", "label", "gold"])


CACHE = ROOT / "var" / "bench" / "davidson_crowd_scores.csv"


def classifier_scores(d: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Out-of-fold probabilities, cached in ``var/bench/`` (the fit takes minutes on the
    loaded machine)."""
    if CACHE.is_file():
        cached = pd.read_csv(CACHE, index_col=0)
        if set(cached.index) == set(d["item"]):
            return cached
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                          LogisticRegression(max_iter=2000, C=4.0))
    proba = cross_val_predict(model, d["tweet"], d["gold"], cv=5, method="predict_proba")
    labels = sorted(d["gold"].unique())
    out = pd.DataFrame(proba, index=d["item"].to_numpy(), columns=labels)
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(CACHE)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    d = load(args.shared / "davidson_hate_offensive" / "labeled_data.csv")
    t0 = time.perf_counter()
    scores = classifier_scores(d, args.seed)
    top = scores.max(axis=1)
    acc = float((scores.idxmax(axis=1) == d.set_index("item")["gold"]).mean())
    print(f"davidson: {len(d)} tweets, {int(d['count'].sum())} votes; classifier out of fold "
          f"accuracy {acc:.3f}, {float((top < 0.9).mean()):.1%} unsure (top < 0.9); "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    sample = d.sample(n=min(args.items, len(d)), random_state=args.seed)
    rec = recording(sample, seed=args.seed)
    unsure = set(top[top < 0.9].index) & set(sample["item"])
    print(f"replayed: {len(sample)} tweets, {len(rec)} votes ({len(rec) / len(sample):.2f} per "
          f"tweet), {len(unsure)} unsure; target {args.target}", flush=True)
    print("classifier | accuracy | to people | answers/tweet | unsure: answers/tweet | "
          "+control/tweet | MV-all acc. | seconds")
    for use in ("off", "prior", "annotator"):
        config = CrowdConfig(aggregation="sds", overlap=1, min_answers=1, max_overlap=9,
                             target_confidence=args.target, golden_per_worker=5,
                             classifier=use)
        r = replay(rec, config=config, seed=args.seed, scores=scores.loc[sample["item"]])
        paid = r.flow.answers[(r.flow.answers["assignment_status"] != "REJECTED")
                              & ~r.flow.answers["is_golden"].astype(bool)]
        per = paid.groupby("task").size()
        real = r.flow.verdicts["task"]
        on_unsure = per.reindex([i for i in real if i in unsure]).fillna(0).mean()
        rep = r.report
        print(f"{use} | {rep.accuracy:.3f} | {rep.to_people:.1%} | {rep.answers_per_item:.2f} | "
              f"{on_unsure:.2f} | {rep.control_answers_per_item:.2f} | "
              f"{rep.mv_all_accuracy:.3f} | {rep.seconds:.0f}", flush=True)


if __name__ == "__main__":
    main()
