"""Dawid–Skene with worker confusion matrices shrunk towards the pooled one (``sds``).

crowd-kit's `DawidSkene` estimates each worker's confusion matrix from that worker's
answers alone: a worker seen on a handful of tasks that agreed with the majority gets a
near-perfect matrix, and two such workers disagreeing 1–1 yield a posterior of 0.99+
for whichever is more "perfect" — a confidence that is not a probability. Here each
worker's matrix is a Dirichlet posterior centred on the pooled matrix of all workers,
with ``strength`` pseudo-answers per true class:

    E_w[k, l] = (n_w[k, l] + strength · P[k, l]) / (n_w[k, ·] + strength)

so a new worker counts as an average worker and earns a matrix of their own as their
answers accumulate (the "two-coin shrunk to the pooled estimate" of issue #13). crowd-kit
offers no prior on the matrices, hence this small EM (numpy, integer codes).

Input: the `crowd.aggregation.Coded` columns ``task, worker, label`` (int codes).
"""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd


class ShrunkDawidSkene:
    """EM for Dawid–Skene with pooled-matrix shrinkage; ``fit(data, true_labels=None)``.

    Learned: ``probas_`` (tasks × labels, a DataFrame indexed by task code),
    ``errors_`` (workers × K × K), ``pooled_`` (K × K), ``priors_`` (K).
    """

    def __init__(self, *, strength: float = 4.0, n_iter: int = 50, tol: float = 1e-6) -> None:
        self.strength = strength
        self.n_iter = n_iter
        self.tol = tol

    def fit(self, data: pd.DataFrame, true_labels: pd.Series | None = None) -> Self:
        t = data["task"].to_numpy(dtype=np.int64)
        w = data["worker"].to_numpy(dtype=np.int64)
        lab = data["label"].to_numpy(dtype=np.int64)
        n_tasks, n_workers = int(t.max()) + 1, int(w.max()) + 1
        k = int(lab.max()) + 1
        if true_labels is not None and len(true_labels):
            k = max(k, int(np.max(true_labels.to_numpy())) + 1)
        # start from the vote shares
        post = np.zeros((n_tasks, k))
        np.add.at(post, (t, lab), 1.0)
        post /= np.maximum(post.sum(axis=1, keepdims=True), 1e-12)
        gold_t = gold_l = None
        if true_labels is not None and len(true_labels):
            gold_t = true_labels.index.to_numpy(dtype=np.int64)
            gold_l = true_labels.to_numpy(dtype=np.int64)
            post[gold_t] = np.eye(k)[gold_l]
        wl = w * k + lab
        for _ in range(self.n_iter):
            # M-step: per-worker counts n_w[true, observed], the pooled matrix, the shrinkage
            counts = np.stack(
                [np.bincount(wl, weights=post[t, c], minlength=n_workers * k) for c in range(k)],
                axis=1,
            ).reshape(n_workers, k, k)  # worker × observed × true
            counts = counts.transpose(0, 2, 1)  # worker × true × observed
            pooled_n = counts.sum(axis=0) + 1e-3
            pooled = pooled_n / pooled_n.sum(axis=1, keepdims=True)
            errors = (counts + self.strength * pooled) / (
                counts.sum(axis=2, keepdims=True) + self.strength
            )
            priors = post.mean(axis=0) + 1e-9
            priors /= priors.sum()
            # E-step
            logp = np.tile(np.log(priors), (n_tasks, 1))
            log_err = np.log(errors)
            for c in range(k):
                logp[:, c] += np.bincount(t, weights=log_err[w, c, lab], minlength=n_tasks)
            logp -= logp.max(axis=1, keepdims=True)
            new = np.exp(logp)
            new /= new.sum(axis=1, keepdims=True)
            if gold_t is not None:
                new[gold_t] = np.eye(k)[gold_l]
            change = float(np.abs(new - post).max())
            post = new
            if change < self.tol:
                break
        answered = np.unique(t)
        self.probas_ = pd.DataFrame(post[answered], index=pd.Index(answered, name="task"))
        self.errors_, self.pooled_, self.priors_ = errors, pooled, priors
        return self
