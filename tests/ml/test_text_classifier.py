"""The text family (word + character TF-IDF stacked with the embedding), family choice by
backed automation, label-group scores and bands, and empty signals not being features."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml.bands import assign_bands, default_bands
from ml.classifier import EmbeddingClassifier, load_classifier
from ml.families import (
    backed_automation,
    group_curve,
    group_scores,
    out_of_fold_proba,
    select_family,
)
from ml.text_classifier import TextStackClassifier

ENCODER_ID = "test:noise"
WORDS = {
    "ok": ["lovely", "sunny", "weekend", "coffee", "friends", "music", "garden", "happy"],
    "offensive": ["stupid", "idiot", "trash", "loser", "dumb", "ugly", "clown", "moron"],
    "hate": ["vermin", "subhuman", "exterminate", "parasites", "deport", "invaders"],
}
FILLER = ["the", "a", "today", "really", "so", "and", "this", "my", "you", "is"]


def corpus(n: int, *, seed: int, dim: int = 16):
    """Short texts whose words tell the label; embeddings that are pure noise (so any
    skill the stack shows over the embedding family comes from the text)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(list(WORDS), size=n, p=[0.5, 0.35, 0.15])
    texts = [" ".join([*rng.choice(WORDS[y], 2), *rng.choice(FILLER, 4)]) for y in labels]
    X = rng.standard_normal((n, dim)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, list(labels), texts


def test_text_stack_learns_from_words_where_the_embedding_is_noise() -> None:
    X, y, texts = corpus(400, seed=0)
    X_t, y_t, texts_t = corpus(200, seed=1)
    stack = TextStackClassifier(encoder_id=ENCODER_ID).fit(X, y, texts=texts)
    emb = EmbeddingClassifier(encoder_id=ENCODER_ID).fit(X, y)
    assert stack.evaluate(X_t, y_t, texts=texts_t)["accuracy"] > 0.95
    assert emb.evaluate(X_t, y_t)["accuracy"] < 0.7
    with pytest.raises(ValueError, match="needs the item texts"):
        stack.predict_proba(X_t)


def test_text_stack_artifact_round_trips_without_pickle(tmp_path) -> None:  # noqa: ANN001
    X, y, texts = corpus(300, seed=2)
    signals = pd.DataFrame({"price": np.linspace(1, 100, 300), "gmv": np.nan})
    model = TextStackClassifier(encoder_id=ENCODER_ID, signal_names=["price", "gmv"],
                                log_signals=["price"]).fit(X, y, signals=signals, texts=texts)
    path = model.save(tmp_path / "m", metrics={"accuracy": 1.0})
    meta = json.loads((path / "meta.json").read_text())
    assert meta["kind"] == "text_stack" and meta["used_signals"] == ["price"]
    with np.load(path / "weights.npz", allow_pickle=False) as arrays:  # no object arrays
        assert arrays["word_vocab"].dtype.kind == "U"
    loaded = load_classifier(path, encoder_id=ENCODER_ID)
    assert isinstance(loaded, TextStackClassifier)
    np.testing.assert_allclose(loaded.predict_proba(X[:50], signals[:50], texts=texts[:50]),
                               model.predict_proba(X[:50], signals[:50], texts=texts[:50]),
                               atol=1e-6)


def test_signals_empty_in_training_are_not_features(tmp_path) -> None:  # noqa: ANN001
    X, y, _ = corpus(200, seed=3)
    empty = pd.DataFrame({"price": np.nan, "gmv": np.nan, "exposure": np.nan},
                         index=range(200))
    model = EmbeddingClassifier(encoder_id=ENCODER_ID, signal_names=["price", "gmv",
                                                                     "exposure"]).fit(
        X, y, signals=empty)
    assert model.signal_names_ == [] and model.coef_.shape[1] == X.shape[1]
    # predicting needs no signals at all, and the artifact says none were used
    assert model.predict_proba(X[:3]).shape == (3, 3)
    meta = json.loads((model.save(tmp_path / "e") / "meta.json").read_text())
    assert meta["used_signals"] == [] and meta["signal_names"] == ["price", "gmv", "exposure"]


def test_out_of_fold_rows_come_from_models_that_never_saw_them() -> None:
    X, y, texts = corpus(120, seed=4)
    # a memorising model would score its training rows perfectly; out of fold it cannot
    # know a row whose label was flipped
    y_noisy = list(y)
    y_noisy[0] = "hate" if y[0] != "hate" else "ok"
    proba, classes = out_of_fold_proba(TextStackClassifier(encoder_id=ENCODER_ID, C=1e4), X,
                                       y_noisy, texts=texts, folds=4)
    assert classes == ["hate", "offensive", "ok"]
    assert classes[int(proba[0].argmax())] == y[0]  # the words, not the flipped label


def test_select_family_keeps_the_one_that_backs_more_automation() -> None:
    X, y, texts = corpus(600, seed=5)
    chosen = select_family(["embedding", "text_stack"], X, y, encoder_id=ENCODER_ID,
                           texts=texts, target_precision=0.95, folds=3)
    assert chosen.chosen == "text_stack"
    shares = {k: v["auto_share"] for k, v in chosen.families.items()}
    assert shares["text_stack"] > shares["embedding"] + 0.3
    without_text = select_family(["embedding", "text_stack"], X, y, encoder_id=ENCODER_ID,
                                 texts=None, target_precision=0.95, folds=3)
    assert without_text.chosen == "embedding"
    assert "skipped" in without_text.families["text_stack"]


def test_group_score_is_one_minus_ok_or_the_sum() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]])
    classes = ["ok", "offensive", "hate"]
    np.testing.assert_allclose(group_scores(proba, classes, ["offensive", "hate"],
                                            ok_label="ok", score="one_minus_ok"), [0.3, 0.9])
    np.testing.assert_allclose(group_scores(proba, classes, ["hate"]), [0.1, 0.4])
    with pytest.raises(ValueError, match="not among the classes"):
        group_scores(proba, classes, ["spam"])


def test_a_group_backs_automation_its_labels_cannot_alone() -> None:
    """Offensive and hate share words (half of each tweet's words come from the other):
    each label alone is unsure, "needs action" as a whole is not."""
    rng = np.random.default_rng(6)
    n = 900
    y = rng.choice(["ok", "offensive", "hate"], size=n, p=[0.5, 0.3, 0.2])
    bad = WORDS["offensive"] + WORDS["hate"]
    texts = [" ".join(rng.choice(WORDS["ok"] if lab == "ok" else bad, 3)) for lab in y]
    X = rng.standard_normal((n, 8)).astype(np.float32)
    proba, classes = out_of_fold_proba(TextStackClassifier(encoder_id=ENCODER_ID), X, list(y),
                                       texts=texts, folds=3)
    per_label = backed_automation(proba, list(y), classes, target_precision=0.99)
    grouped = backed_automation(proba, list(y), classes, target_precision=0.99,
                                groups={"action": ["offensive", "hate"]}, ok_label="ok")
    assert grouped["auto_share"] > per_label["auto_share"] + 0.3
    curve = group_curve(proba, list(y), classes, ["offensive", "hate"])
    assert curve.attrs["n_positive"] == int((y != "ok").sum())


def test_group_band_decides_remove_and_names_the_likeliest_reason() -> None:
    kinds = {"ok": "ok", "offensive": "bad", "hate": "bad"}
    bands = default_bands(kinds)
    bands["group:action"] = {"high": 0.9, "middle": 0.6}
    labels = ["ok", "offensive", "hate"]
    proba = np.array([[0.05, 0.50, 0.45],   # group 0.95: decided, reason offensive
                      [0.30, 0.30, 0.40],   # group 0.70: routed (middle)
                      [0.996, 0.002, 0.002],  # ok decides on its own
                      [0.55, 0.25, 0.20]])  # no group band, ok below its cuts
    res = assign_bands(proba, labels, bands=bands, policy_kinds=kinds,
                       auto_decide=["auto_ok", "ML_BAD_HIGH"],
                       groups={"action": ["offensive", "hate"]})
    assert [(r.band, r.label, r.decides, r.group) for r in res] == [
        ("ML_BAD_HIGH", "offensive", True, "action"),
        ("ML_BAD_MIDDLE", "hate", False, "action"),
        ("auto_ok", "ok", True, None),
        (None, "ok", False, None),
    ]
    assert res[0].probability == pytest.approx(0.95)
    # without group cut-offs in the set (never calibrated) the per-label rules stand
    plain = assign_bands(proba, labels, bands=default_bands(kinds), policy_kinds=kinds,
                         auto_decide=["auto_ok", "ML_BAD_HIGH"],
                         groups={"action": ["offensive", "hate"]})
    assert [r.group for r in plain] == [None] * 4 and not plain[0].decides
