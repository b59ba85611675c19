"""Word and character n-gram TF-IDF stacked with the item embedding: the text family.

On short text (tweets, comments, titles) a sentence encoder alone loses to word
features: on the Davidson tweets, out of fold, MiniLM + logistic regression decided
71% automatically at 99% precision where TF-IDF + logistic regression decided 78%
(issue 12). :class:`TextStackClassifier` gives one multinomial logistic regression the
three views side by side, as sparse blocks of one feature matrix::

    [ word 1-2-gram TF-IDF | character 2-5-gram TF-IDF | w * embedding | signals ]

Each TF-IDF block is L2-normalised per row (scikit-learn's ``TfidfVectorizer``), the
embedding is a unit vector scaled by ``embedding_weight``, signals are standardised as
in :class:`ml.classifier.EmbeddingClassifier` (and dropped when the training set never
has them, see :func:`ml.classifier.present_signals`).

The artifact keeps no pickle: the vocabularies (``word_vocab``, ``char_vocab``: term
strings, index order) and the IDF vectors go in ``weights.npz`` beside the dense
``coef``; loading rebuilds the vectorisers with ``vocabulary=`` and sets ``idf_``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from ml.classifier import (
    Signals,
    _check_x,
    _read_artifact,
    _softmax,
    _write_artifact,
    evaluate_proba,
    present_signals,
    scaled_signals,
    signal_matrix,
    standardise,
)

__all__ = ["TextFamily", "TextStackClassifier"]


def _vectorizer(kind: str, *, ngram_range: tuple[int, int], min_df: int,
                max_features: int | None, vocabulary: Mapping[str, int] | None = None) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    analyzer = "word" if kind == "word" else "char_wb"
    return TfidfVectorizer(analyzer=analyzer, ngram_range=ngram_range, lowercase=True,
                           min_df=1 if vocabulary is not None else min_df,
                           max_features=None if vocabulary is not None else max_features,
                           sublinear_tf=True, dtype=np.float32, vocabulary=vocabulary)


class TextFamily:
    """What the families that read the item texts share: the texts' check, ``predict``
    and ``evaluate`` over the subclass's ``predict_proba(X, signals, texts=...)``."""

    family = "text"
    needs_texts = True
    labels_: list[str]

    def predict_proba(self, X: np.ndarray, signals: Signals = None, *,
                      texts: Sequence[str] | None = None) -> np.ndarray:
        raise NotImplementedError

    def _texts(self, texts: Sequence[str] | None, n: int) -> list[str]:
        if texts is None:
            raise ValueError(f"the {self.family} classifier needs the item texts (texts=...)")
        out = ["" if t is None else str(t) for t in texts]
        if len(out) != n:
            raise ValueError(f"{len(out)} texts for {n} rows")
        return out

    def predict(self, X: np.ndarray, signals: Signals = None, *,
                texts: Sequence[str] | None = None) -> np.ndarray:
        proba = self.predict_proba(X, signals, texts=texts)
        return np.asarray(self.labels_, dtype=object)[proba.argmax(1)]

    def evaluate(self, X: np.ndarray, y: Sequence[str], *, signals: Signals = None,
                 texts: Sequence[str] | None = None) -> dict[str, Any]:
        return evaluate_proba(self.predict_proba(X, signals, texts=texts), y,
                              labels=self.labels_)


class TextStackClassifier(TextFamily):
    """Multinomial logistic regression on ``[word TF-IDF | char TF-IDF | w·embedding |
    signals]``.

    ``fit(X, y, signals=..., texts=...)`` and ``predict_proba(X, signals, texts=...)``:
    ``X`` is ``[n, dim]`` embeddings, ``texts`` the ``n`` item texts (what the encoder
    embedded: ``ml.inputs.item_text``), ``signals`` as for
    :class:`~ml.classifier.EmbeddingClassifier`, ``y`` policy label strings.

    Learned: ``labels_``, ``coef_`` ``[n_labels, n_features]``, ``intercept_``,
    ``word_``/``char_`` (fitted vectorisers), ``signal_names_`` (signals present in
    training), ``signal_mean_``, ``signal_scale_``, ``dim_``, ``n_train_``,
    ``label_counts_``.
    """

    kind = "text_stack"
    family = "text_stack"

    def __init__(
        self,
        *,
        encoder_id: str,
        signal_names: Sequence[str] = (),
        log_signals: Sequence[str] = (),
        word_ngrams: tuple[int, int] = (1, 2),
        char_ngrams: tuple[int, int] = (2, 5),
        min_df: int = 2,
        max_features: int | None = 200_000,
        embedding_weight: float = 1.0,
        C: float = 10.0,  # noqa: N803 - scikit-learn's name
        class_weight: str | Mapping[str, float] | None = None,
        max_iter: int = 2000,
    ) -> None:
        unknown = set(log_signals) - set(signal_names)
        if unknown:
            raise ValueError(f"log_signals not in signal_names: {sorted(unknown)}")
        if embedding_weight < 0:
            raise ValueError("embedding_weight must be >= 0")
        self.encoder_id = encoder_id
        self.signal_names = list(signal_names)
        self.log_signals = list(log_signals)
        self.word_ngrams = (int(word_ngrams[0]), int(word_ngrams[1]))
        self.char_ngrams = (int(char_ngrams[0]), int(char_ngrams[1]))
        self.min_df = min_df
        self.max_features = max_features
        self.embedding_weight = embedding_weight
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter

    def config(self) -> dict[str, Any]:
        return {"signal_names": self.signal_names, "log_signals": self.log_signals,
                "word_ngrams": list(self.word_ngrams), "char_ngrams": list(self.char_ngrams),
                "min_df": self.min_df, "max_features": self.max_features,
                "embedding_weight": self.embedding_weight, "C": self.C,
                "class_weight": self.class_weight, "max_iter": self.max_iter}

    def clone(self) -> TextStackClassifier:
        """An unfitted copy with the same configuration (for out-of-fold refits)."""
        cfg = self.config()
        cfg["word_ngrams"], cfg["char_ngrams"] = tuple(cfg["word_ngrams"]), tuple(
            cfg["char_ngrams"])
        return TextStackClassifier(encoder_id=self.encoder_id, **cfg)

    def _features(self, X: np.ndarray, signals: Signals, texts: list[str]) -> Any:
        from scipy import sparse

        blocks = [self.word_.transform(texts), self.char_.transform(texts)]
        if self.embedding_weight > 0:
            blocks.append(sparse.csr_matrix(X * np.float32(self.embedding_weight)))
        if self.signal_names_:
            scaled = scaled_signals(signals, self.signal_names_, self.log_signals, len(X),
                                    self.signal_mean_, self.signal_scale_)
            blocks.append(sparse.csr_matrix(scaled.astype(np.float32)))
        return sparse.hstack(blocks, format="csr")

    def fit(self, X: np.ndarray, y: Sequence[str], *, signals: Signals = None,
            texts: Sequence[str] | None = None) -> Self:
        import pandas as pd
        from sklearn.linear_model import LogisticRegression

        X = _check_x(X, None)
        y_arr = np.asarray(y, dtype=object)
        if len(y_arr) != len(X):
            raise ValueError(f"{len(y_arr)} labels for {len(X)} rows")
        text_list = self._texts(texts, len(X))
        self.signal_names_ = present_signals(signals, self.signal_names, len(X))
        raw = signal_matrix(signals, self.signal_names_, self.log_signals, len(X))
        self.signal_mean_, self.signal_scale_ = standardise(raw)
        min_df = self.min_df if len(X) >= 10 * self.min_df else 1
        self.word_ = _vectorizer("word", ngram_range=self.word_ngrams, min_df=min_df,
                                 max_features=self.max_features).fit(text_list)
        self.char_ = _vectorizer("char", ngram_range=self.char_ngrams, min_df=min_df,
                                 max_features=self.max_features).fit(text_list)
        self.dim_ = X.shape[1]
        model = LogisticRegression(C=self.C, class_weight=self.class_weight,
                                   max_iter=self.max_iter)
        model.fit(self._features(X, signals, text_list), y_arr)
        self.labels_ = [str(c) for c in model.classes_]
        if len(self.labels_) < 2:
            raise ValueError("need at least two labels to fit")
        coef, intercept = model.coef_, model.intercept_
        if len(self.labels_) == 2:  # one row in sklearn; softmax([-z/2, z/2]) = sigmoid(z)
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        self.coef_ = np.asarray(coef, dtype=np.float64)
        self.intercept_ = np.asarray(intercept, dtype=np.float64)
        self.n_train_ = len(X)
        self.label_counts_ = {str(k): int(v) for k, v in pd.Series(y_arr).value_counts().items()}
        return self

    def predict_proba(self, X: np.ndarray, signals: Signals = None, *,
                      texts: Sequence[str] | None = None) -> np.ndarray:
        X = _check_x(X, self.dim_)
        features = self._features(X, signals, self._texts(texts, len(X)))
        return _softmax(np.asarray(features @ self.coef_.T) + self.intercept_)

    def save(self, path: str | Path, *, metrics: Mapping[str, Any] | None = None) -> Path:
        arrays = {
            "coef": self.coef_, "intercept": self.intercept_,
            "signal_mean": self.signal_mean_, "signal_scale": self.signal_scale_,
            "word_vocab": np.asarray(self.word_.get_feature_names_out(), dtype=str),
            "word_idf": self.word_.idf_, "char_vocab": np.asarray(
                self.char_.get_feature_names_out(), dtype=str),
            "char_idf": self.char_.idf_,
        }
        meta = {"kind": self.kind, "family": self.family, "encoder_id": self.encoder_id,
                "labels": self.labels_, "dim": self.dim_, "n_train": self.n_train_,
                "label_counts": self.label_counts_, "used_signals": self.signal_names_,
                "config": self.config(),
                "metrics": dict(metrics) if metrics is not None else None}
        return _write_artifact(path, arrays=arrays, meta=meta)

    @classmethod
    def load(cls, path: str | Path, *, encoder_id: str) -> Self:
        arrays, meta = _read_artifact(path, kind=cls.kind, encoder_id=encoder_id)
        cfg = dict(meta["config"])
        cfg["word_ngrams"], cfg["char_ngrams"] = tuple(cfg["word_ngrams"]), tuple(
            cfg["char_ngrams"])
        model = cls(encoder_id=meta["encoder_id"], **cfg)
        for name in ("word", "char"):
            vocab = {str(t): i for i, t in enumerate(arrays[f"{name}_vocab"].tolist())}
            vec = _vectorizer(name, ngram_range=getattr(model, f"{name}_ngrams"),
                              min_df=1, max_features=None, vocabulary=vocab)
            vec.idf_ = arrays[f"{name}_idf"]
            setattr(model, f"{name}_", vec)
        model.coef_, model.intercept_ = arrays["coef"], arrays["intercept"]
        model.signal_mean_, model.signal_scale_ = arrays["signal_mean"], arrays["signal_scale"]
        model.signal_names_ = list(meta["used_signals"])
        model.labels_, model.dim_ = list(meta["labels"]), int(meta["dim"])
        model.n_train_, model.label_counts_ = int(meta["n_train"]), dict(meta["label_counts"])
        model.metrics_ = meta.get("metrics")
        return model
