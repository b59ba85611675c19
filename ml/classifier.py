"""Policy-label classifiers on item embeddings, and their versioned artifacts.

:class:`EmbeddingClassifier` is a multinomial logistic regression over an item's
embedding plus optional numeric signals (price, GMV, exposure, safety score, ...).
Signals are optionally ``log1p``-transformed, then standardised with the training
mean and scale; a missing signal (NaN) becomes the training mean.

Why scikit-learn's ``LogisticRegression`` rather than a hand-written softmax: its L-BFGS
solver, L2 regularisation, convergence checks and class weights are tested by many
users; a hand-rolled gradient descent would need its own tuning and tests for no gain.
Only the learned arrays are kept (``coef_``, ``intercept_``), so inference and loading
are a numpy softmax and artifacts need no pickle.

:class:`ZeroShotClassifier` covers the cold start: softmax over the cosine similarity
between an item and each label's description, scaled by ``1 / temperature``.

Both expose ``labels_`` and ``predict_proba(X, signals=None)`` with columns in
``labels_`` order, and save to an artifact directory: ``weights.npz`` (arrays only,
loaded with ``allow_pickle=False``) and ``meta.json`` (kind, ``encoder_id``, labels,
training-set size, held-out metrics). Loading checks the ``encoder_id``: vectors of
different encoders never mix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from ml.encoders import Encoder
from ml.errors import EncoderMismatchError

__all__ = ["EmbeddingClassifier", "ZeroShotClassifier", "evaluate_proba", "load_classifier"]

FORMAT_VERSION = 1
Signals = pd.DataFrame | np.ndarray | None


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def evaluate_proba(proba: np.ndarray, y: Sequence[str], *, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-label precision/recall/support of ``argmax(proba)``."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    labels = list(labels)
    y_true = np.asarray(y, dtype=object)
    y_pred = np.asarray(labels, dtype=object)[np.asarray(proba).argmax(axis=1)]
    precision, recall, _, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "per_label": {
            label: {"precision": float(p), "recall": float(r), "support": int(s)}
            for label, p, r, s in zip(labels, precision, recall, support, strict=True)
        },
    }


def _check_x(X: np.ndarray, dim: int | None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or (dim is not None and X.shape[1] != dim):
        raise ValueError(f"X must be [n, {dim}], got {X.shape}")
    return X


def _write_artifact(
    path: str | Path, *, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / "weights.npz", **arrays)
    full = {
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **meta,
    }
    (path / "meta.json").write_text(json.dumps(full, indent=2, sort_keys=True))
    return path


def _read_artifact(
    path: str | Path, *, kind: str, encoder_id: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    path = Path(path)
    meta: dict[str, Any] = json.loads((path / "meta.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported artifact format {meta.get('format_version')}")
    if meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind')!r} model, not {kind!r}")
    if meta["encoder_id"] != encoder_id:
        raise EncoderMismatchError(
            f"model at {path} was trained on encoder {meta['encoder_id']!r}, but vectors "
            f"come from {encoder_id!r}; retrain instead of mixing encoders"
        )
    with np.load(path / "weights.npz", allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    return arrays, meta


def present_signals(signals: Signals, names: Sequence[str], n: int) -> list[str]:
    """The ``names`` that have a value on at least one row of ``signals``.

    A signal that is empty for the whole training set (tweets have no price, no GMV)
    is not a feature: it would add a column of zeros to learn nothing from, and a
    model trained on it would ask for it at prediction time.
    """
    if not names or signals is None:
        return []
    if isinstance(signals, pd.DataFrame):
        return [c for c in names if c in signals.columns and signals[c].notna().any()]
    values = np.asarray(signals, dtype=np.float64).reshape(n, -1)
    return [c for j, c in enumerate(names) if j < values.shape[1]
            and (~np.isnan(values[:, j])).any()]


def signal_matrix(signals: Signals, names: Sequence[str], log_signals: Sequence[str],
                  n: int) -> np.ndarray:
    """``[n, len(names)]`` float values of the named signals (``log1p`` where asked)."""
    if not names:
        return np.zeros((n, 0))
    if signals is None:
        raise ValueError(f"this classifier needs signals {list(names)}")
    if isinstance(signals, pd.DataFrame):
        missing = [c for c in names if c not in signals.columns]
        if missing:
            raise ValueError(f"signals lack columns {missing}")
        values = signals[list(names)].to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = np.asarray(signals, dtype=np.float64).reshape(n, -1)
    if values.shape != (n, len(names)):
        raise ValueError(f"signals must be [{n}, {len(names)}]")
    for j, name in enumerate(names):
        if name in log_signals:
            values[:, j] = np.log1p(np.clip(values[:, j], 0, None))
    return values


def scaled_signals(signals: Signals, names: Sequence[str], log_signals: Sequence[str],
                   n: int, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``[n, len(names)]`` signals standardised with the training ``mean`` and ``scale``
    (`standardise`); a missing value (NaN) becomes the training mean, i.e. 0."""
    raw = signal_matrix(signals, names, log_signals, n)
    return np.nan_to_num((raw - mean) / scale, nan=0.0)


def standardise(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of each column over its non-missing values (scale 1 when constant)."""
    seen = ~np.isnan(raw)
    n_seen = seen.sum(axis=0)
    filled = np.where(seen, raw, 0.0)
    mean = np.divide(filled.sum(axis=0), n_seen, out=np.zeros(raw.shape[1]), where=n_seen > 0)
    var = np.divide((np.where(seen, raw - mean, 0.0) ** 2).sum(axis=0), n_seen,
                    out=np.ones(raw.shape[1]), where=n_seen > 0)
    std = np.sqrt(var)
    return mean, np.where(std > 0, std, 1.0)


class EmbeddingClassifier:
    """Multinomial logistic regression on ``[embedding | standardised signals]``.

    ``signals`` (fit and predict) is a DataFrame with the ``signal_names`` columns (or
    an array with them in that order); ``log_signals`` names those to ``log1p`` first
    (heavy-tailed: price, GMV, exposure). ``y`` holds policy label strings.

    Learned: ``labels_``, ``signal_names_`` (the configured signals that have a value
    on some training row: an empty signal is not a feature), ``coef_``
    ``[n_labels, dim + len(signal_names_)]``, ``intercept_``, ``signal_mean_``,
    ``signal_scale_``, ``dim_``, ``n_train_``, ``label_counts_``.
    """

    kind = "embedding_logreg"
    family = "embedding"
    needs_texts = False

    def __init__(
        self,
        *,
        encoder_id: str,
        signal_names: Sequence[str] = (),
        log_signals: Sequence[str] = (),
        C: float = 10.0,  # noqa: N803 - scikit-learn's name
        class_weight: str | Mapping[str, float] | None = "balanced",
        max_iter: int = 2000,
    ) -> None:
        unknown = set(log_signals) - set(signal_names)
        if unknown:
            raise ValueError(f"log_signals not in signal_names: {sorted(unknown)}")
        self.encoder_id = encoder_id
        self.signal_names = list(signal_names)
        self.log_signals = list(log_signals)
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter

    def clone(self) -> EmbeddingClassifier:
        """An unfitted copy with the same configuration (for out-of-fold refits)."""
        return EmbeddingClassifier(encoder_id=self.encoder_id, signal_names=self.signal_names,
                                   log_signals=self.log_signals, C=self.C,
                                   class_weight=self.class_weight, max_iter=self.max_iter)

    def _features(self, X: np.ndarray, signals: Signals) -> np.ndarray:
        return np.hstack([X, scaled_signals(signals, self.signal_names_, self.log_signals,
                                            len(X), self.signal_mean_, self.signal_scale_)])

    def fit(self, X: np.ndarray, y: Sequence[str], *, signals: Signals = None,
            texts: Sequence[str] | None = None) -> Self:
        """Fit on embeddings ``X`` (``texts`` is accepted for the common interface)."""
        from sklearn.linear_model import LogisticRegression

        X = _check_x(X, None)
        y_arr = np.asarray(y, dtype=object)
        if len(y_arr) != len(X):
            raise ValueError(f"{len(y_arr)} labels for {len(X)} rows")
        self.signal_names_ = present_signals(signals, self.signal_names, len(X))
        raw = signal_matrix(signals, self.signal_names_, self.log_signals, len(X))
        self.signal_mean_, self.signal_scale_ = standardise(raw)
        model = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter)
        model.fit(self._features(X, signals), y_arr)
        self.labels_ = [str(c) for c in model.classes_]
        if len(self.labels_) < 2:
            raise ValueError("need at least two labels to fit")
        coef, intercept = model.coef_, model.intercept_
        if len(self.labels_) == 2:  # sklearn keeps one row; softmax([-z/2, z/2]) = sigmoid(z)
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        self.coef_ = coef.astype(np.float64)
        self.intercept_ = intercept.astype(np.float64)
        self.dim_ = X.shape[1]
        self.n_train_ = len(X)
        self.label_counts_ = {str(k): int(v) for k, v in pd.Series(y_arr).value_counts().items()}
        return self

    def predict_proba(self, X: np.ndarray, signals: Signals = None, *,
                      texts: Sequence[str] | None = None) -> np.ndarray:
        X = _check_x(X, self.dim_)
        return _softmax(self._features(X, signals) @ self.coef_.T + self.intercept_)

    def predict(self, X: np.ndarray, signals: Signals = None, *,
                texts: Sequence[str] | None = None) -> np.ndarray:
        return np.asarray(self.labels_, dtype=object)[self.predict_proba(X, signals).argmax(1)]

    def evaluate(
        self, X: np.ndarray, y: Sequence[str], *, signals: Signals = None,
        texts: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Held-out metrics: accuracy, macro-F1, per-label precision/recall/support."""
        return evaluate_proba(self.predict_proba(X, signals), y, labels=self.labels_)

    def save(self, path: str | Path, *, metrics: Mapping[str, Any] | None = None) -> Path:
        """Write the artifact directory; ``metrics`` (from :meth:`evaluate`) go in meta.json."""
        arrays = {
            "coef": self.coef_,
            "intercept": self.intercept_,
            "signal_mean": self.signal_mean_,
            "signal_scale": self.signal_scale_,
        }
        meta = {
            "kind": self.kind,
            "encoder_id": self.encoder_id,
            "labels": self.labels_,
            "dim": self.dim_,
            "n_train": self.n_train_,
            "label_counts": self.label_counts_,
            "family": self.family,
            "signal_names": self.signal_names,
            "used_signals": self.signal_names_,
            "log_signals": self.log_signals,
            "config": {"C": self.C, "class_weight": self.class_weight, "max_iter": self.max_iter},
            "metrics": dict(metrics) if metrics is not None else None,
        }
        return _write_artifact(path, arrays=arrays, meta=meta)

    @classmethod
    def load(cls, path: str | Path, *, encoder_id: str) -> Self:
        """Load an artifact; ``encoder_id`` must be the one the model was trained on."""
        arrays, meta = _read_artifact(path, kind=cls.kind, encoder_id=encoder_id)
        model = cls(
            encoder_id=meta["encoder_id"],
            signal_names=meta["signal_names"],
            log_signals=meta["log_signals"],
            **meta["config"],
        )
        model.coef_, model.intercept_ = arrays["coef"], arrays["intercept"]
        model.signal_mean_, model.signal_scale_ = arrays["signal_mean"], arrays["signal_scale"]
        # artifacts written before empty signals were dropped used every configured one
        model.signal_names_ = list(meta.get("used_signals", meta["signal_names"]))
        model.labels_, model.dim_ = list(meta["labels"]), int(meta["dim"])
        model.n_train_, model.label_counts_ = int(meta["n_train"]), dict(meta["label_counts"])
        model.metrics_ = meta.get("metrics")
        return model


class ZeroShotClassifier:
    """Cold start: ``softmax(cos(x, description_label) / temperature)`` over labels.

    Learned (from the descriptions): ``labels_``, ``prototypes_`` ``[n_labels, dim]``.
    ``signals`` are accepted and ignored, for the same interface as
    :class:`EmbeddingClassifier`.
    """

    kind = "zero_shot"
    family = "zero_shot"
    needs_texts = False

    def __init__(self, *, encoder_id: str, temperature: float = 0.05) -> None:
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.encoder_id = encoder_id
        self.temperature = temperature

    @classmethod
    def from_label_descriptions(
        cls, encoder: Encoder, descriptions: Mapping[str, str], *, temperature: float = 0.05
    ) -> Self:
        model = cls(encoder_id=encoder.encoder_id, temperature=temperature)
        return model.fit(encoder.encode_texts(list(descriptions.values())), list(descriptions))

    def fit(self, prototypes: np.ndarray, labels: Sequence[str]) -> Self:
        """Set one unit vector per label (the encoded descriptions)."""
        prototypes = _check_x(prototypes, None)
        if len(prototypes) != len(labels) or len(labels) < 2:
            raise ValueError("need one prototype per label, and at least two labels")
        norms = np.linalg.norm(prototypes, axis=1, keepdims=True)
        self.prototypes_ = prototypes / np.where(norms > 0, norms, 1.0)
        self.labels_ = [str(label) for label in labels]
        self.dim_ = prototypes.shape[1]
        return self

    def predict_proba(self, X: np.ndarray, signals: Signals = None, *,
                      texts: Sequence[str] | None = None) -> np.ndarray:
        X = _check_x(X, self.dim_)
        return _softmax((X @ self.prototypes_.T).astype(np.float64) / self.temperature)

    def predict(self, X: np.ndarray, signals: Signals = None, *,
                texts: Sequence[str] | None = None) -> np.ndarray:
        return np.asarray(self.labels_, dtype=object)[self.predict_proba(X).argmax(1)]

    def evaluate(
        self, X: np.ndarray, y: Sequence[str], *, signals: Signals = None,
        texts: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        return evaluate_proba(self.predict_proba(X), y, labels=self.labels_)

    def save(self, path: str | Path, *, metrics: Mapping[str, Any] | None = None) -> Path:
        meta = {
            "kind": self.kind,
            "encoder_id": self.encoder_id,
            "labels": self.labels_,
            "dim": self.dim_,
            "n_train": 0,
            "temperature": self.temperature,
            "metrics": dict(metrics) if metrics is not None else None,
        }
        return _write_artifact(path, arrays={"prototypes": self.prototypes_}, meta=meta)

    @classmethod
    def load(cls, path: str | Path, *, encoder_id: str) -> Self:
        arrays, meta = _read_artifact(path, kind=cls.kind, encoder_id=encoder_id)
        model = cls(encoder_id=meta["encoder_id"], temperature=float(meta["temperature"]))
        model.fit(arrays["prototypes"], meta["labels"])
        model.metrics_ = meta.get("metrics")
        return model


def load_classifier(path: str | Path, *, encoder_id: str) -> Any:
    """Load whichever classifier kind the artifact at ``path`` holds."""
    from ml.finetune import MiniLMFineTuned
    from ml.text_classifier import TextStackClassifier

    kind = json.loads((Path(path) / "meta.json").read_text()).get("kind")
    for cls in (EmbeddingClassifier, ZeroShotClassifier, TextStackClassifier,
                MiniLMFineTuned):
        if kind == cls.kind:
            return cls.load(path, encoder_id=encoder_id)
    raise ValueError(f"{path}: unknown classifier kind {kind!r}")
