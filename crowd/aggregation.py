"""Label aggregation with crowd-kit, chosen by name, with an explicit "needs more" status.

Methods (crowd-kit classes): ``mv`` `MajorityVote`, ``wawa`` `Wawa`, ``ds``
`DawidSkene`, ``glad`` `GLAD`, ``gold_mv`` `GoldMajorityVote`. How gold is used:

* ``ds``: the known labels are passed as ``true_labels``; crowd-kit clamps those
  tasks' posteriors to the truth in every EM step, which anchors worker error matrices.
* ``gold_mv``: worker skills are their smoothed accuracy on the gold tasks (as
  crowd-kit's `GoldMajorityVote`, which drops workers without gold answers: here they
  vote with the pooled gold accuracy of the others, so no task loses its label).
* ``mv`` (and ``gold_mv``'s fallback): when gold is given, each worker's vote is
  weighted by their smoothed gold accuracy ``(right + 1) / (seen + 2)``
  (crowd-kit ``MajorityVote(skills=...)``).
* ``sds``: `crowd.skill.ShrunkDawidSkene`, Dawid–Skene whose worker confusion matrices
  are shrunk towards the pooled matrix (a worker with few answers counts as an average
  one), gold clamped like ``ds``: its confidence on thin evidence is not overstated.
* ``wawa``, ``glad``: crowd-kit offers no gold input; gold answers stay in the data
  like any task, so they shape the estimates only through agreement.

Gold tasks get their aggregated label like any other task (so accuracy against gold
can be measured); callers drop them from verdicts if they only served as control.

Answers go into crowd-kit as integer codes (`Coded`), 3–5× faster than strings on
large pools; results carry the original task and label names.

Confidence is the method's posterior (``predict_proba``). For ``mv`` it is the vote share
smoothed by a symmetric Dirichlet prior of total weight one over the labels answered,
``(votes_l + 1/K) / (n + 1)`` (weighted votes with gold): one answer of two labels states
0.75, not 1.0 — a pool that starts at one answer buys a second where the target asks
for it. crowd-kit's `MajorityVote` states raw shares, hence the few numpy lines.

**Priors and the classifier** (``sds`` only; other methods ignore them): ``prior`` is a
``task × label`` frame of probabilities (the classifier's calibrated score of the item)
that replaces the crowd's learned base rate as the item's prior; ``classifier`` the same
frame used instead as one more annotator with its own confusion matrix
(`classifier_symbols`, `crowd.skill.ShrunkDawidSkene`).
``status`` is ``"decided"`` or ``"needs_more"``: a tie for the top label (``label``
is then ``None``: never a coin flip), fewer than ``min_answers`` answers, or a
confidence under ``target_confidence``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from crowdkit.aggregation import GLAD, DawidSkene, MajorityVote, Wawa

from crowd.skill import ShrunkDawidSkene

Method = Literal["mv", "wawa", "ds", "sds", "glad", "gold_mv"]
METHODS: tuple[str, ...] = ("mv", "wawa", "ds", "sds", "glad", "gold_mv")
RESULT_COLUMNS = ["task", "label", "confidence", "n_answers", "method", "status"]
TIE_TOLERANCE = 1e-9


def _gold_series(gold: pd.Series | Mapping[str, str] | pd.DataFrame | None) -> pd.Series | None:
    if gold is None:
        return None
    if isinstance(gold, pd.DataFrame):
        gold = gold.set_index("task")["label"]
    series = pd.Series(gold, dtype=object)
    series.index.name = "task"
    return series


@dataclass(frozen=True)
class Coded:
    """Answers as integer codes (crowd-kit is several times faster on them than on
    strings): ``data`` columns ``task, worker, label`` (int), and the values behind
    each code. ``gold``: known labels as ``task code → label code`` (tasks and labels
    nobody answered dropped)."""

    data: pd.DataFrame
    tasks: pd.Index
    workers: pd.Index
    labels: pd.Index
    gold: pd.Series | None

    @classmethod
    def of(cls, answers: pd.DataFrame, gold: pd.Series | None = None) -> Coded:
        t, tasks = pd.factorize(answers["task"].astype(str), sort=True)
        w, workers = pd.factorize(answers["worker"].astype(str))
        lab, labels = pd.factorize(answers["label"].astype(str), sort=True)
        data = pd.DataFrame({"task": t, "worker": w, "label": lab})
        coded_gold = None
        if gold is not None and len(gold):
            g = pd.Series(gold.astype(str).to_numpy(), index=gold.index.astype(str))
            ti, li = tasks.get_indexer(g.index), labels.get_indexer(g.to_numpy())
            keep = (ti >= 0) & (li >= 0)
            if keep.any():
                coded_gold = pd.Series(li[keep], index=pd.Index(ti[keep], name="task"))
        return cls(data=data, tasks=pd.Index(tasks), workers=pd.Index(workers),
                   labels=pd.Index(labels), gold=coded_gold)

    def align(self, frame: pd.DataFrame | None) -> np.ndarray | None:
        """A ``task × label`` frame (any task names, label columns) as a tasks × labels
        array in code order: NaN rows for tasks it lacks, its mass on labels nobody
        answered dropped (rows renormalised). None when nothing of it applies."""
        if frame is None or not len(frame):
            return None
        f = frame.copy()
        f.index = f.index.astype(str)
        f.columns = [str(c) for c in f.columns]
        f = f.reindex(columns=list(self.labels)).astype(float)
        f = f[~f.index.duplicated()].reindex(list(self.tasks))
        values = f.to_numpy(dtype=float)
        known = ~np.isnan(values).all(axis=1)
        values[known] = np.nan_to_num(values[known], nan=0.0)
        total = values.sum(axis=1, keepdims=True)
        values = np.where(total > 0, values / np.where(total > 0, total, 1.0), np.nan)
        return values if (~np.isnan(values).any(axis=1)).any() else None

    def decode(self, probas: pd.DataFrame) -> pd.DataFrame:
        """crowd-kit's ``task code × label code`` probabilities with the real names, every
        label a column (in label order)."""
        probas = probas.reindex(columns=range(len(self.labels)), fill_value=0.0)
        probas.columns = self.labels
        probas.index = self.tasks[probas.index.to_numpy(dtype=int)]
        probas.index.name = "task"
        probas.columns.name = "label"
        return probas


def _gold_skills(data: pd.DataFrame, gold: pd.Series, *, unknown: float | None = 0.5
                 ) -> pd.Series:
    """Per worker (code) smoothed gold accuracy ``(right + 1) / (seen + 2)``; workers
    without a gold answer get ``unknown`` (None: the pooled accuracy of the others)."""
    seen = data[data["task"].isin(gold.index)]
    right = (seen["label"].to_numpy() == gold.reindex(seen["task"]).to_numpy()).astype(float)
    stats = (
        pd.DataFrame({"worker": seen["worker"].to_numpy(), "right": right})
        .groupby("worker")["right"]
        .agg(["sum", "size"])
    )
    skills = (stats["sum"] + 1) / (stats["size"] + 2)
    if unknown is None:
        unknown = float((stats["sum"].sum() + 1) / (stats["size"].sum() + 2))
    return skills.reindex(np.unique(data["worker"].to_numpy())).fillna(unknown)


#: The confidence bins of the classifier's top score (`classifier_symbols`).
SCORE_BINS = (0.6, 0.75, 0.9)


def classifier_symbols(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The classifier's output on each task as one discrete answer: its top label × the
    bin of its top probability (`SCORE_BINS`). ``scores``: tasks × labels (NaN rows: no
    score). Returns ``(task codes, symbol codes, n_symbols)``."""
    known = np.flatnonzero(~np.isnan(scores).any(axis=1))
    top = np.argmax(scores[known], axis=1)
    conf = scores[known, top]
    n_bins = len(SCORE_BINS) + 1
    return known, top * n_bins + np.digitize(conf, SCORE_BINS), scores.shape[1] * n_bins


def _smoothed_vote(data: pd.DataFrame, n_labels: int, skills: pd.Series | None = None
                   ) -> pd.DataFrame:
    """(Weighted) vote share with a symmetric Dirichlet prior of total weight 1."""
    t = data["task"].to_numpy(dtype=np.int64)
    lab = data["label"].to_numpy(dtype=np.int64)
    weight = (np.ones(len(t)) if skills is None
              else skills.reindex(data["worker"].to_numpy()).fillna(0.5).to_numpy(dtype=float))
    n_tasks = int(t.max()) + 1
    sums = np.zeros((n_tasks, n_labels))
    np.add.at(sums, (t, lab), weight)
    answered = np.unique(t)
    sums = sums[answered] + 1.0 / n_labels
    return pd.DataFrame(sums / sums.sum(axis=1, keepdims=True),
                        index=pd.Index(answered, name="task"))


def _posteriors(coded: Coded, *, method: str, seed: int, prior: np.ndarray | None = None,
                classifier: np.ndarray | None = None, temper_min_gold: int = 0,
                lone_answers: bool = False) -> pd.DataFrame:
    data, gold = coded.data, coded.gold
    if method == "mv":
        skills = _gold_skills(data, gold) if gold is not None else None
        return _smoothed_vote(data, len(coded.labels), skills)
    if method == "wawa":
        # Wawa.predict_proba trips sklearn>=1.6's check_is_fitted; its own definition is
        # a majority vote weighted by the fitted skills, so apply that directly.
        return MajorityVote().fit(data, skills=Wawa().fit(data).skills_).probas_
    if method == "ds":
        return DawidSkene(n_iter=100).fit(data, true_labels=gold).probas_
    if method == "sds":
        annotator = classifier_symbols(classifier) if classifier is not None else None
        return ShrunkDawidSkene(temper_min_gold=temper_min_gold, lone_answers=lone_answers).fit(
            data, true_labels=gold, task_prior=prior, annotator=annotator).probas_
    if method == "glad":
        np.random.seed(seed)  # GLAD's initialisation draws from numpy's global RNG
        return GLAD(n_iter=100).fit_predict_proba(data)
    if method == "gold_mv":
        if gold is None:
            raise ValueError("gold_mv needs gold labels for some answered tasks")
        # crowd-kit's GoldMajorityVote drops workers without gold answers (their tasks
        # get no label); they vote here with the pooled gold accuracy of the others
        return MajorityVote().fit(data, skills=_gold_skills(data, gold, unknown=None)).probas_
    raise ValueError(f"unknown aggregation method {method!r}; choose from {METHODS}")


def posteriors(
    answers: pd.DataFrame, *, method: str = "mv", gold: pd.Series | None = None, seed: int = 0
) -> pd.DataFrame:
    """``task × label`` probabilities from crowd-kit (rows sum to 1)."""
    coded = Coded.of(answers, _gold_series(gold))
    return coded.decode(_posteriors(coded, method=method, seed=seed))


def aggregate(
    answers: pd.DataFrame,
    *,
    method: str = "ds",
    gold: pd.Series | Mapping[str, str] | pd.DataFrame | None = None,
    target_confidence: float = 0.0,
    min_answers: int = 1,
    seed: int = 0,
    prior: pd.DataFrame | None = None,
    classifier: pd.DataFrame | None = None,
    temper_min_gold: int = 0,
    lone_answers: bool = False,
) -> pd.DataFrame:
    """Aggregate ``answers`` (columns ``task``, ``worker``, ``label``; one row per answer).

    ``gold``: known labels (Series/Mapping ``task -> label`` or a frame ``task, label``).
    ``prior`` / ``classifier``: ``task × label`` probabilities (``sds``; see the module).
    ``temper_min_gold``: ``sds``'s posterior tempered on the gold; ``lone_answers``: its
    matrices count single-answer items too (`CrowdConfig`).
    Returns one row per task: ``task, label, confidence, n_answers, method, status``;
    ``.attrs["temperature"]``: what the posterior was tempered by (1.0: not tempered);
    ``.attrs["class_bias"]``: ``label -> bias`` added to the tempered log-posterior (empty
    when not tempered) — with the temperature, what turned the model's posterior into the
    stated confidence: ``softmax(log p / T + b)``.
    """
    if answers.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in RESULT_COLUMNS})
    coded = Coded.of(answers, _gold_series(gold))
    fitted = _posteriors(coded, method=method, seed=seed, prior=coded.align(prior),
                         classifier=coded.align(classifier), temper_min_gold=temper_min_gold,
                         lone_answers=lone_answers)
    temperature = float(fitted.attrs.get("temperature", 1.0))
    bias = fitted.attrs.get("class_bias")
    class_bias = ({label: float(b) for label, b in zip(coded.labels, bias, strict=True)}
                  if bias is not None and np.any(bias) else {})
    raw = fitted.fillna(0.0)
    probas = raw.reindex(columns=range(len(coded.labels)), fill_value=0.0)
    values = probas.to_numpy(dtype=float)
    order = np.argsort(-values, axis=1, kind="stable")
    top = values[np.arange(len(values)), order[:, 0]]
    second = (
        values[np.arange(len(values)), order[:, 1]]
        if values.shape[1] > 1
        else np.zeros(len(values))
    )
    tie = np.abs(top - second) <= TIE_TOLERANCE
    labels = np.asarray(coded.labels, dtype=object)[order[:, 0]]
    task_codes = probas.index.to_numpy(dtype=int)
    counts = np.bincount(coded.data["task"].to_numpy(), minlength=len(coded.tasks))
    out = pd.DataFrame(
        {
            "task": np.asarray(coded.tasks, dtype=object)[task_codes],
            "label": np.where(tie, None, labels),
            "confidence": top,
            "n_answers": counts[task_codes],
            "method": method,
        }
    )
    needs_more = tie | (out["n_answers"] < min_answers).to_numpy() | (top < target_confidence)
    out["status"] = np.where(needs_more, "needs_more", "decided")
    # task codes follow the sorted task names: ordering by code orders by task
    result = out[RESULT_COLUMNS].iloc[np.argsort(task_codes, kind="stable")].reset_index(
        drop=True)
    result.attrs["temperature"] = temperature  # sds tempered on the gold; else 1.0
    result.attrs["class_bias"] = class_bias
    return result
