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

A **prior per item** (``task_prior``): the E-step starts each task from the learned class
base rate, or, where the caller knows more (the classifier's calibrated score of the item
that sent it to the crowd), from that distribution.

**The classifier as one more annotator** (``annotator``, as cleanlab's CROWDLAB treats a
model beside the annotators): its output on a task, discretised into a symbol (the top
label × a confidence bin), is one more observation with a confusion matrix of its own
(true label × symbol, Dirichlet(1)-smoothed), learned by the same EM from the agreement
with the crowd — so a classifier that is wrong on the items it sends to the crowd counts
for little, unlike a prior taken at its word.

**Tempered on the gold** (``temper_min_gold``): with enough control tasks, a temperature
and a per-class bias fitted on their held-out posteriors at 1–5 answers
(`ShrunkDawidSkene._temperature`) are applied to every task's log-posterior, for crowds
whose errors are not independent given the true label (docs/crowd.md).

Input: the `crowd.aggregation.Coded` columns ``task, worker, label`` (int codes).
"""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd


class ShrunkDawidSkene:
    """EM for Dawid–Skene with pooled-matrix shrinkage; ``fit(data, true_labels=None)``.

    Learned: ``probas_`` (tasks × labels, a DataFrame indexed by task code),
    ``errors_`` (workers × K × K), ``pooled_`` (K × K), ``priors_`` (K),
    ``temperature_`` and ``class_bias_`` (K; 1.0 and zeros when not tempered).
    """

    def __init__(self, *, strength: float = 4.0, pooled_strength: float = 20.0,
                 n_iter: int = 50, tol: float = 1e-6, temper_min_gold: int = 0,
                 temper_max_answers: int = 5, lone_answers: bool = False) -> None:
        self.lone_answers = lone_answers
        self.temper_min_gold = temper_min_gold
        self.temper_max_answers = temper_max_answers
        self.strength = strength
        self.pooled_strength = pooled_strength
        self.n_iter = n_iter
        self.tol = tol

    def fit(
        self,
        data: pd.DataFrame,
        true_labels: pd.Series | None = None,
        *,
        task_prior: np.ndarray | None = None,
        annotator: tuple[np.ndarray, np.ndarray, int] | None = None,
    ) -> Self:
        """``task_prior``: tasks × labels (task codes as rows, label codes as columns; a
        row of NaN = no prior: the class base rate). ``annotator``: ``(task codes, symbol
        codes, n_symbols)`` of one extra annotator with a tasks' × symbols confusion
        matrix (`aggregation.classifier_symbols`)."""
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
        has_prior = None
        if task_prior is not None:
            tp = np.full((n_tasks, k), np.nan)
            rows = min(n_tasks, task_prior.shape[0])
            cols = min(k, task_prior.shape[1])
            tp[:rows, :cols] = task_prior[:rows, :cols]
            has_prior = ~np.isnan(tp).any(axis=1)
            if has_prior.any():
                tp = np.where(np.isnan(tp), 0.0, tp)
                tp = np.clip(tp, 1e-4, None)
                tp /= tp.sum(axis=1, keepdims=True)
                log_tp = np.log(tp)
            else:
                has_prior = None
        a_t = a_s = None
        n_sym = 0
        if annotator is not None and len(annotator[0]):
            a_t, a_s, n_sym = annotator
            keep = a_t < n_tasks
            a_t, a_s = a_t[keep].astype(np.int64), a_s[keep].astype(np.int64)
        a_err = None
        wl = w * k + lab
        # answers on tasks with no other evidence (one answer, no gold, no prior, no
        # classifier) say nothing about their worker: they stay out of the M-step
        n_per_task = np.bincount(t, minlength=n_tasks)
        evidence = n_per_task > 1
        if gold_t is not None:
            evidence[gold_t] = True
        if has_prior is not None:
            evidence |= has_prior
        if a_t is not None:
            evidence[a_t] = True
        # ``lone_answers``: count them anyway — the full likelihood. Calibrated stopping
        # asks a second answer only where the first was unsure, so the tasks with several
        # answers are not a random sample of the items: leaving the lone ones out biases the
        # matrices (ConvAbuse with few control tasks: unanimous abusive items stated ~0.69).
        # In a crowd the model misfits, counting them sharpens its over-confidence unless
        # the posterior is tempered on the gold.
        use = np.ones(len(t), dtype=bool) if self.lone_answers else evidence[t]
        for _ in range(self.n_iter):
            # M-step: per-worker counts n_w[true, observed], the pooled matrix, the shrinkage
            # (a task's lone answer would only confirm itself: left out, see above)
            weights = post[t] * use[:, None]
            counts = np.stack(
                [np.bincount(wl, weights=weights[:, c], minlength=n_workers * k)
                 for c in range(k)],
                axis=1,
            ).reshape(n_workers, k, k)  # worker × observed × true
            counts = counts.transpose(0, 2, 1)  # worker × true × observed
            # the pooled matrix has a prior too: ``pooled_strength`` pseudo-answers per true
            # class of a "typical worker" (the overall agreement on the diagonal, the rest
            # spread evenly). Without it a class nobody truly has (an answer given only in
            # error, e.g. "page not found") gets a row estimated from the messy tasks EM
            # parks there, and then absorbs every messy task with high confidence.
            pooled_n = counts.sum(axis=0)
            total = pooled_n.sum()
            agree = float(np.trace(pooled_n) / total) if total > 0 else 1.0 / k
            typical = np.full((k, k), (1.0 - agree) / max(k - 1, 1))
            np.fill_diagonal(typical, agree)
            pooled_n = pooled_n + self.pooled_strength * typical + 1e-3
            pooled = pooled_n / pooled_n.sum(axis=1, keepdims=True)
            errors = (counts + self.strength * pooled) / (
                counts.sum(axis=2, keepdims=True) + self.strength
            )
            priors = post.mean(axis=0) + 1e-9
            priors /= priors.sum()
            if a_t is not None:
                a_counts = np.stack(
                    [np.bincount(a_s, weights=post[a_t, c], minlength=n_sym) for c in range(k)]
                )  # true × symbol
                a_err = (a_counts + 1.0) / (a_counts.sum(axis=1, keepdims=True) + n_sym)
            # E-step
            logp = np.tile(np.log(priors), (n_tasks, 1))
            if has_prior is not None:
                logp[has_prior] = log_tp[has_prior]
            if a_err is not None:
                np.add.at(logp, a_t, np.log(a_err[:, a_s]).T)
            log_err = np.log(errors)
            for c in range(k):
                logp[:, c] += np.bincount(t, weights=log_err[w, c, lab], minlength=n_tasks)
            new = np.exp(logp - logp.max(axis=1, keepdims=True))
            new /= new.sum(axis=1, keepdims=True)
            if gold_t is not None:
                new[gold_t] = np.eye(k)[gold_l]
            change = float(np.abs(new - post).max())
            post = new
            if change < self.tol:
                break
        # The posterior stated for a task judges its workers by their *other* tasks: each
        # answer's likelihood comes from its worker's matrix with this task's own soft
        # count taken out (leave-one-task-out), so a task never vouches for the workers
        # who vouch for it — in-sample matrices make thin evidence look certain.
        own = post[t] * use[:, None]  # answers × true: the task's share of the counts
        num = counts[w, :, lab] - own + self.strength * pooled[:, lab].T
        den = counts[w].sum(axis=2) - own + self.strength
        held = np.log(np.clip(num, 1e-12, None) / den)
        logp = np.tile(np.log(priors), (n_tasks, 1))
        if has_prior is not None:
            logp[has_prior] = log_tp[has_prior]
        if a_err is not None:
            np.add.at(logp, a_t, np.log(a_err[:, a_s]).T)
        for c in range(k):
            logp[:, c] += np.bincount(t, weights=held[:, c], minlength=n_tasks)
        self.temperature_, self.class_bias_ = 1.0, np.zeros(k)
        if self.temper_min_gold > 0 and gold_t is not None:
            self.temperature_, self.class_bias_ = self._temperature(
                base=logp, held=held, t=t, gold_t=gold_t, gold_l=gold_l, n_tasks=n_tasks)
            logp = logp / self.temperature_ + self.class_bias_
        post = np.exp(logp - logp.max(axis=1, keepdims=True))
        post /= post.sum(axis=1, keepdims=True)
        if gold_t is not None:
            post[gold_t] = np.eye(k)[gold_l]
        answered = np.unique(t)
        self.probas_ = pd.DataFrame(post[answered], index=pd.Index(answered, name="task"))
        self.probas_.attrs["temperature"] = self.temperature_
        self.probas_.attrs["class_bias"] = self.class_bias_.copy()  # by label code
        self.errors_, self.pooled_, self.priors_ = errors, pooled, priors
        self.annotator_errors_ = a_err
        return self

    #: the largest temperature fitted (≥ 1: tempering never makes the posterior sharper)
    MAX_TEMPERATURE = 20.0

    def _temperature(self, *, base: np.ndarray, held: np.ndarray, t: np.ndarray,
                     gold_t: np.ndarray, gold_l: np.ndarray, n_tasks: int
                     ) -> tuple[float, np.ndarray]:
        """The temperature T ≥ 1 and the per-class bias b whose tempered posteriors
        ``softmax(log p / T + b)`` fit the control tasks' gold best (maximum likelihood,
        a standard-normal prior on each bias; the first class's bias is 0).

        Each control task is judged as a real one would be at the answer counts where
        stopping decides: from its first 1, 2, … ``temper_max_answers`` answers, each
        answer's likelihood from its worker's matrix with this task's own (gold) share
        taken out (``held``), on the task's prior. A scalar T cannot undo errors that hit
        some classes only (workers who answer "ok" for much of what is truly bad); the
        bias can. (1.0, 0) below ``temper_min_gold`` control tasks with answers."""
        from scipy.optimize import minimize

        k = base.shape[1]
        none = (1.0, np.zeros(k))
        is_gold = np.zeros(n_tasks, dtype=bool)
        is_gold[gold_t] = True
        label_of = np.full(n_tasks, -1, dtype=np.int64)
        label_of[gold_t] = gold_l
        rows = np.flatnonzero(is_gold[t])
        if len(np.unique(t[rows])) < self.temper_min_gold:
            return none
        # the task's prior: its log-posterior less every answer's held-out term
        full = np.zeros_like(base)
        np.add.at(full, t[rows], held[rows])
        prior = base - full
        # running sums of the answers' terms per control task, in answer order
        order = rows[np.argsort(t[rows], kind="stable")]
        tasks = t[order]
        rank = np.arange(len(order)) - np.searchsorted(tasks, tasks, side="left")
        keep = rank < self.temper_max_answers
        order, tasks = order[keep], tasks[keep]
        cum = np.cumsum(held[order], axis=0)
        start = np.searchsorted(tasks, tasks, side="left")
        before = np.where((start > 0)[:, None], cum[np.maximum(start - 1, 0)], 0.0)
        logits = prior[tasks] + cum - before  # one row per (control task, first m answers)
        rows_at = np.arange(len(logits))
        truth = label_of[tasks]

        def loss(params: np.ndarray) -> float:
            z = logits / np.exp(params[0]) + np.r_[0.0, params[1:]]
            z = z - z.max(axis=1, keepdims=True)
            nll = -(z[rows_at, truth] - np.log(np.exp(z).sum(axis=1))).sum()
            return float(nll + 0.5 * (params[1:] ** 2).sum())

        bounds = [(0.0, float(np.log(self.MAX_TEMPERATURE)))] + [(-5.0, 5.0)] * (k - 1)
        fit = minimize(loss, np.zeros(k), method="L-BFGS-B", bounds=bounds)
        if not np.isfinite(fit.fun) or fit.fun > loss(np.zeros(k)):
            return none
        return float(np.exp(fit.x[0])), np.r_[0.0, fit.x[1:]]
