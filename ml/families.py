"""Classifier families, out-of-fold scores, label groups, and picking a family by the
automation it can back.

A *family* is a trainable classifier configuration (:data:`FAMILIES`):

- ``embedding``: :class:`ml.classifier.EmbeddingClassifier`, logistic regression on the
  encoder's vector (+ signals): works for any item, images included;
- ``text_stack``: :class:`ml.text_classifier.TextStackClassifier`, word and character
  n-gram TF-IDF stacked with the vector (+ signals): wins on short text;
- ``minilm_finetune``: :class:`ml.finetune.MiniLMFineTuned`, the bundled MiniLM with its
  top layers fine-tuned on the labels (+ signals): offered only where labels are plenty
  (``min_labels``), and not among the default candidates on a CPU (:func:`default_families`).

:func:`select_family` scores each candidate **out of fold** on the labelled set
(:func:`out_of_fold_proba`), applies the same threshold rule calibration uses
(``ml.calibration.choose_threshold``: largest automation whose lower confidence bound
on precision meets the target) per label and per label group, and keeps the family
with the higher *backed automation share* (the share of labelled items some backed
cut-off would decide). Ties keep the earlier candidate (the cheaper ``embedding``).

Label groups (:func:`group_scores`): a policy may say ``action: [offensive, hate]``;
the group's score is ``1 - P(ok)`` (``"one_minus_ok"``, when the group is every label
but the OK one, or asked for) or the sum of its members' probabilities (``"sum"``).
A group band decides "needs action" as a whole while people pick the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "FAMILIES",
    "FamilySelection",
    "GroupScore",
    "backed_automation",
    "create_family",
    "default_families",
    "group_curve",
    "group_scores",
    "out_of_fold_proba",
    "select_family",
]

GroupScore = Literal["one_minus_ok", "sum"]
FAMILIES = ("embedding", "text_stack", "minilm_finetune")


def default_families(*, cuda: bool | None = None) -> tuple[str, ...]:
    """The candidates ``quorum train`` scores when none are named: every family on a
    CUDA machine; on a CPU the fine-tuned MiniLM only when asked for (five out-of-fold
    fine-tunes of 12,000 tweets took 18.5 minutes on two cores)."""
    if cuda is None:
        try:
            import torch

            cuda = bool(torch.cuda.is_available())
        except ImportError:  # pragma: no cover - torch is a dependency
            cuda = False
    return FAMILIES if cuda else ("embedding", "text_stack")


def create_family(family: str, *, encoder_id: str, signal_names: Sequence[str] = (),
                  log_signals: Sequence[str] = (), **config: Any) -> Any:
    """An unfitted classifier of ``family`` (one of :data:`FAMILIES`)."""
    if family == "embedding":
        from ml.classifier import EmbeddingClassifier

        return EmbeddingClassifier(encoder_id=encoder_id, signal_names=signal_names,
                                   log_signals=log_signals, **config)
    if family == "text_stack":
        from ml.text_classifier import TextStackClassifier

        return TextStackClassifier(encoder_id=encoder_id, signal_names=signal_names,
                                   log_signals=log_signals, **config)
    if family == "minilm_finetune":
        from ml.finetune import MiniLMFineTuned

        return MiniLMFineTuned(encoder_id=encoder_id, signal_names=signal_names,
                               log_signals=log_signals, **config)
    raise ValueError(f"unknown classifier family {family!r}; use one of {list(FAMILIES)}")


def _take(values: Any, idx: np.ndarray) -> Any:
    if values is None:
        return None
    if hasattr(values, "iloc"):
        return values.iloc[idx]
    if isinstance(values, np.ndarray):
        return values[idx]
    return [values[i] for i in idx]


def out_of_fold_proba(model: Any, X: np.ndarray, y: Sequence[str], *, signals: Any = None,
                      texts: Sequence[str] | None = None, folds: int = 5, seed: int = 0,
                      classes: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """``[n, k]`` probabilities where row ``i`` comes from a copy of ``model`` fitted
    without row ``i`` (``folds`` interleaved folds of a seeded permutation), and the
    classes (columns; default the sorted labels of ``y``)."""
    y_arr = np.asarray(y, dtype=object)
    n = len(y_arr)
    classes = sorted({str(v) for v in y_arr}) if classes is None else list(classes)
    folds = max(2, min(int(folds), n))
    order = np.random.default_rng(seed).permutation(n)
    proba = np.zeros((n, len(classes)))
    for f in range(folds):
        test = np.sort(order[f::folds])
        fit = np.setdiff1d(order, test)
        if len(set(y_arr[fit])) < 2:
            raise ValueError("out-of-fold refit needs labels of two classes in every fold")
        fold = model.clone().fit(X[fit], list(y_arr[fit]), signals=_take(signals, fit),
                                 texts=_take(texts, fit))
        p = fold.predict_proba(X[test], _take(signals, test), texts=_take(texts, test))
        for j, lab in enumerate(fold.labels_):
            if lab in classes:
                proba[test, classes.index(lab)] = p[:, j]
    return proba, classes


def group_scores(proba: np.ndarray, classes: Sequence[str], members: Sequence[str], *,
                 ok_label: str | None = None, score: GroupScore = "sum") -> np.ndarray:
    """The group's score per row: ``1 - P(ok_label)`` or the sum of the members'
    probabilities (the same when the group is every label but OK and rows sum to 1)."""
    classes = list(classes)
    unknown = [m for m in members if m not in classes]
    if unknown:
        raise ValueError(f"group members {unknown} are not among the classes {classes}")
    p = np.asarray(proba, dtype=np.float64)
    if score == "one_minus_ok":
        if ok_label is None or ok_label not in classes:
            raise ValueError("score='one_minus_ok' needs the OK label among the classes")
        return 1.0 - p[:, classes.index(ok_label)]
    if score != "sum":
        raise ValueError(f"unknown group score {score!r}; use 'one_minus_ok' or 'sum'")
    return p[:, [classes.index(m) for m in members]].sum(axis=1)


def group_curve(proba: np.ndarray, y_true: Sequence[str], classes: Sequence[str],
                members: Sequence[str], *, ok_label: str | None = None,
                score: GroupScore = "sum", weights: Any = None) -> Any:
    """Precision / recall curve of deciding "in the group" at ``group score >= t``:
    positives are items whose true label is a member (``ml.calibration.binary_curve``;
    ``weights``: inverse sampling probabilities, a weighted curve)."""
    from ml.calibration import binary_curve

    s = group_scores(proba, classes, members, ok_label=ok_label, score=score)
    positive = np.isin(np.asarray(y_true, dtype=object), list(members))
    return binary_curve(scores=s, positive=positive, weights=weights)


@dataclass
class FamilySelection:
    """What :func:`select_family` measured: per family the backed automation share and
    its parts; ``chosen`` is the winner."""

    chosen: str
    target_precision: float
    folds: int
    families: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def backed_automation(proba: np.ndarray, y: Sequence[str], classes: Sequence[str], *,
                      target_precision: float, confidence: float = 0.95,
                      method: str = "wilson", groups: Mapping[str, Sequence[str]] | None = None,
                      ok_label: str | None = None) -> dict[str, Any]:
    """Share of the labelled items that backed cut-offs decide at ``target_precision``.

    Per label the band is the one-vs-rest band on the argmax (``label_curve``); with
    ``groups`` the members' bands are replaced by the group's band (score: sum of the
    members). Bands of different labels never overlap (argmax, and a group is disjoint
    from the labels outside it), so the decided counts add up.
    """
    from ml.calibration import choose_threshold, label_curve

    classes = list(classes)
    groups = {k: list(v) for k, v in (groups or {}).items()}
    grouped = {m for members in groups.values() for m in members}
    n = len(y)
    parts: dict[str, Any] = {}
    decided = 0
    curves = [(lab, label_curve(proba=proba, y_true=list(y), classes=classes, label=lab))
              for lab in classes if lab not in grouped]
    curves += [(f"group:{name}", group_curve(proba, y, classes, members, ok_label=ok_label))
               for name, members in groups.items()]
    for name, curve in curves:
        choice = choose_threshold(curve, target_precision=target_precision,
                                  confidence=confidence, method=method)  # type: ignore[arg-type]
        n_auto = int(choice.n_auto) if choice.threshold is not None else 0
        decided += n_auto
        parts[name] = {"threshold": choice.threshold, "n_auto": n_auto,
                       "precision_lower": choice.precision_lower}
    if groups:  # a group band decides items whose argmax may be outside it: no double count
        decided = min(decided, n)
    return {"auto_share": decided / n if n else 0.0, "n_auto": decided, "n": n,
            "bands": parts}


def select_family(candidates: Mapping[str, Any] | Sequence[str], X: np.ndarray,
                  y: Sequence[str], *, encoder_id: str | None = None, signals: Any = None,
                  texts: Sequence[str] | None = None, signal_names: Sequence[str] = (),
                  log_signals: Sequence[str] = (), target_precision: float = 0.99,
                  confidence: float = 0.95, method: str = "wilson", folds: int = 5,
                  seed: int = 0, groups: Mapping[str, Sequence[str]] | None = None,
                  ok_label: str | None = None,
                  progress: Callable[[str], None] | None = None) -> FamilySelection:
    """Score each candidate family out of fold and keep the one that backs the most
    automation (see the module docstring). ``candidates``: family names (built with
    :func:`create_family`) or ``{name: unfitted model}``. A family that needs texts is
    skipped when ``texts`` is None."""
    if not isinstance(candidates, Mapping):
        if encoder_id is None:
            raise ValueError("family names need encoder_id")
        candidates = {name: create_family(name, encoder_id=encoder_id,
                                          signal_names=signal_names, log_signals=log_signals)
                      for name in candidates}
    if not candidates:
        raise ValueError("no candidate family")
    classes = sorted({str(v) for v in y})
    results: dict[str, dict[str, Any]] = {}
    for name, model in candidates.items():
        if getattr(model, "needs_texts", False) and (
                texts is None or not any(str(t or "").strip() for t in texts)):
            results[name] = {"skipped": "needs texts; the items have none"}
            continue
        need = int(getattr(model, "min_labels", 0) or 0)
        if len(y) < need:
            results[name] = {"skipped": f"needs at least {need} labelled items; has {len(y)}"}
            continue
        if progress:
            progress(f"scoring family {name} out of fold ({folds} folds)")
        proba, _ = out_of_fold_proba(model, X, y, signals=signals, texts=texts, folds=folds,
                                     seed=seed, classes=classes)
        results[name] = backed_automation(proba, y, classes, target_precision=target_precision,
                                          confidence=confidence, method=method, groups=groups,
                                          ok_label=ok_label)
    scored = [(name, r["auto_share"]) for name, r in results.items() if "auto_share" in r]
    if not scored:
        raise ValueError("no candidate family could be scored")
    best = max(scored, key=lambda item: item[1])[0]  # max keeps the first of equal shares
    return FamilySelection(chosen=best, target_precision=target_precision,
                           folds=folds, families=results)
