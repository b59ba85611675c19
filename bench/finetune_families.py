"""Classifier families out of fold on the Davidson history: is fine-tuning MiniLM worth it?

Reads ``../shared/data/davidson_hate_offensive/labeled_data.csv`` in place, takes the
same 70 % history as ``bench/davidson.py`` (seed 0, stratified), binary "needs action vs
OK", and scores each family named in ``--families`` out of fold
(``ml.families.out_of_fold_proba``, the folds ``quorum train`` uses), then prints per
family: ROC AUC of P(action), the backed automation share at 95 % and 99 % (the rule
calibration uses: one-sided 95 % Wilson bound), and the seconds it took. With
``--ensemble`` it also scores the mean of the families' out-of-fold probabilities.

    .venv/bin/python bench/finetune_families.py                      # text_stack vs fine-tune
    .venv/bin/python bench/finetune_families.py --limit 3000 --folds 3   # a quick look

MiniLM vectors for the ``text_stack``'s embedding block come from ``bench/davidson.py``'s
cache (``var/bench/``), computed on the first run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.davidson import embeddings, label_of, load_tweets, split  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", default="text_stack,minilm_finetune")
    ap.add_argument("--limit", type=int, default=None, help="at most N history tweets")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--trainable-layers", default="auto")
    ap.add_argument("--ensemble", action="store_true",
                    help="also score the mean of the families' probabilities")
    ap.add_argument("--encoder", default="minilm", choices=["minilm", "hashing"])
    args = ap.parse_args(argv)

    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    from ml.families import create_family, out_of_fold_proba

    tweets = load_tweets()
    history, _ = split(tweets["cls"].to_numpy())
    vectors = embeddings(tweets["tweet"].tolist(), args.encoder)
    if args.limit:
        history = np.random.default_rng(0).permutation(history)[:args.limit]
        history.sort()
    X = vectors[history]
    texts = tweets["tweet"].iloc[history].tolist()
    y = [label_of(c, "binary") for c in tweets["cls"].iloc[history]]
    classes = sorted(set(y))
    positive = np.asarray(y) == "action"
    print(f"{len(y)} history tweets, {positive.mean():.1%} action, {args.folds} folds")
    probas = {}
    for name in [f.strip() for f in args.families.split(",") if f.strip()]:
        config = {}
        if name == "minilm_finetune":
            layers = args.trainable_layers
            config = {"epochs": args.epochs,
                      "trainable_layers": layers if layers == "auto" else int(layers)}
        model = create_family(name, encoder_id="bench", **config)
        started = time.perf_counter()
        with threadpool_limits(1, user_api="blas"):
            proba, cols = out_of_fold_proba(model, X, y, texts=texts, folds=args.folds,
                                            classes=classes)
        probas[name] = proba
        report(name, proba, cols, y, positive, time.perf_counter() - started, roc_auc_score)
    if args.ensemble and len(probas) > 1:
        mean = np.mean(list(probas.values()), axis=0)
        report("mean of " + "+".join(probas), mean, classes, y, positive, 0.0, roc_auc_score)
    return 0


def report(name, proba, classes, y, positive, seconds, auc) -> None:  # noqa: ANN001
    from ml.families import backed_automation

    score = proba[:, classes.index("action")]
    parts = [f"{name:<28} AUC {auc(positive, score):.4f}"]
    for target in (0.95, 0.99):
        r = backed_automation(proba, y, classes, target_precision=target)
        bands = ", ".join(f"{k} {v['n_auto']}" for k, v in r["bands"].items())
        parts.append(f"at {target:.0%}: {r['auto_share']:.1%} ({bands})")
    parts.append(f"{seconds:.0f} s")
    print(" | ".join(parts), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
