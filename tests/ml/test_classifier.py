from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.classifier import EmbeddingClassifier, ZeroShotClassifier, load_classifier
from ml.encoders import HashingEncoder
from ml.errors import EncoderMismatchError

LABELS = ["adult", "fraud", "ok", "prohibited", "restricted"]
ENCODER_ID = "test:clusters"


def clustered(n_per: int, *, seed: int, dim: int = 48, spread: float = 0.6):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).standard_normal((len(LABELS), dim))
    y = np.repeat(LABELS, n_per)
    X = centres[np.repeat(np.arange(len(LABELS)), n_per)] + spread * rng.standard_normal(
        (len(y), dim)
    )
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), y


def test_fit_predict_proba_columns_follow_labels() -> None:
    X, y = clustered(60, seed=0)
    model = EmbeddingClassifier(encoder_id=ENCODER_ID).fit(X, y)
    assert model.labels_ == LABELS and model.n_train_ == 300
    X_test, y_test = clustered(30, seed=1)
    proba = model.predict_proba(X_test)
    assert proba.shape == (150, 5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    # column j is the probability of labels_[j]: the true label's column is the largest
    assert np.mean(np.asarray(model.labels_)[proba.argmax(1)] == y_test) > 0.95
    metrics = model.evaluate(X_test, y_test)
    assert metrics["accuracy"] > 0.95 and metrics["macro_f1"] > 0.95 and metrics["n"] == 150
    assert set(metrics["per_label"]) == set(LABELS)
    assert metrics["per_label"]["fraud"]["support"] == 30


def test_signals_are_used_and_standardised() -> None:
    # same embeddings for both labels: only the price tells fraud (absurdly cheap) apart
    rng = np.random.default_rng(2)
    X = np.tile(np.eye(8, dtype=np.float32)[0], (400, 1))
    y = np.where(np.arange(400) % 2 == 0, "fraud", "ok")
    price = np.where(y == "fraud", rng.uniform(0.5, 2, 400), rng.uniform(50, 5000, 400))
    signals = pd.DataFrame({"price": price, "exposure": rng.uniform(0, 1e6, 400)})
    model = EmbeddingClassifier(
        encoder_id=ENCODER_ID, signal_names=["price", "exposure"], log_signals=["price", "exposure"]
    ).fit(X, y, signals=signals)
    assert model.labels_ == ["fraud", "ok"]
    test = pd.DataFrame({"price": [1.0, 900.0, np.nan], "exposure": [10.0, 10.0, 10.0]})
    proba = model.predict_proba(X[:3], test)
    assert proba[0, 0] > 0.9 and proba[1, 1] > 0.9
    assert 0.05 < proba[2, 0] < 0.95  # missing price → the training mean: unsure
    no_signals = EmbeddingClassifier(encoder_id=ENCODER_ID).fit(X, y)
    assert np.allclose(no_signals.predict_proba(X[:2]), 0.5, atol=0.05)
    with pytest.raises(ValueError, match="needs signals"):
        model.predict_proba(X[:3])


def test_binary_probabilities_match_scikit_learn() -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = clustered(50, seed=3, spread=1.5)
    keep = np.isin(y, ["ok", "fraud"])
    X, y = X[keep], y[keep]
    ours = EmbeddingClassifier(encoder_id=ENCODER_ID, class_weight=None).fit(X, y)
    reference = LogisticRegression(C=10.0, max_iter=2000).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), reference.predict_proba(X), atol=1e-6)


def test_save_load_round_trip_without_pickle(tmp_path: Path) -> None:
    X, y = clustered(40, seed=4)
    signals = pd.DataFrame({"price": np.arange(len(y), dtype=float)})
    model = EmbeddingClassifier(encoder_id=ENCODER_ID, signal_names=["price"]).fit(
        X, y, signals=signals
    )
    metrics = model.evaluate(X, y, signals=signals)
    path = model.save(tmp_path / "clf-v1", metrics=metrics)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["encoder_id"] == ENCODER_ID and meta["labels"] == LABELS
    assert meta["n_train"] == 200 and meta["metrics"]["accuracy"] == metrics["accuracy"]
    with np.load(path / "weights.npz", allow_pickle=False) as data:
        assert data["coef"].shape == (5, 49)
    loaded = load_classifier(path, encoder_id=ENCODER_ID)
    assert isinstance(loaded, EmbeddingClassifier) and loaded.labels_ == LABELS
    np.testing.assert_array_equal(loaded.predict_proba(X, signals), model.predict_proba(X, signals))


def test_loading_for_another_encoder_is_refused(tmp_path: Path) -> None:
    X, y = clustered(10, seed=5)
    path = EmbeddingClassifier(encoder_id=ENCODER_ID).fit(X, y).save(tmp_path / "clf")
    with pytest.raises(EncoderMismatchError, match="retrain"):
        EmbeddingClassifier.load(path, encoder_id="minilm:all-MiniLM-L6-v2")


def test_wrong_embedding_width_is_rejected() -> None:
    X, y = clustered(10, seed=6)
    model = EmbeddingClassifier(encoder_id=ENCODER_ID).fit(X, y)
    with pytest.raises(ValueError, match=r"\[n, 48\]"):
        model.predict_proba(np.zeros((2, 12)))


def test_zero_shot_picks_the_closest_description(tmp_path: Path) -> None:
    encoder = HashingEncoder(dim=512)
    descriptions = {
        "ok": "ordinary household goods kitchen table chair",
        "adult": "explicit adult erotic lingerie",
        "fraud": "wire transfer only suspicious absurd price",
    }
    model = ZeroShotClassifier.from_label_descriptions(encoder, descriptions, temperature=0.05)
    items = encoder.encode_texts(
        [
            "wooden kitchen table and chair",
            "erotic lingerie set",
            "pay by wire transfer only, absurd price",
        ]
    )
    proba = model.predict_proba(items)
    assert model.labels_ == ["ok", "adult", "fraud"]
    assert proba.argmax(1).tolist() == [0, 1, 2]
    colder = ZeroShotClassifier.from_label_descriptions(encoder, descriptions, temperature=1.0)
    assert colder.predict_proba(items).max() < proba.max()  # temperature flattens
    path = model.save(tmp_path / "zs")
    loaded = load_classifier(path, encoder_id=encoder.encoder_id)
    np.testing.assert_allclose(loaded.predict_proba(items), proba)
