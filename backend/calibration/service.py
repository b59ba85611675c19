"""Calibration runs: human verdicts become ground truth, thresholds are re-chosen from them.

- ``kind="classifier"``: the labelled set is every item with a final human verdict
  (moderator or aggregated crowd) of a policy class, frozen with the run. Scores come
  from the active classifier, **out of fold** when it was trained (a k-fold refit with
  the same configuration: calibrating on training data would be optimistic); the
  zero-shot start needs no refit. Per label, ``ml.calibration.label_curve`` and
  ``choose_threshold`` pick the deciding cut-off (``auto`` / ``high``) at the deciding
  target and the routing cut-off (``good`` / ``middle``) at the routing target, both by
  the lower-confidence-bound rule. Where nothing can be backed the current cut-off stays
  and the run says how many more labels are needed.
- ``kind="similarity"``: the reuse distance is chosen (``choose_reuse_distance``) on
  pairs from two places: the **history** (each item with a human verdict and its nearest
  labelled neighbour: did they get the same label? ``history_pairs``; no fresh pair
  tasks are needed where history answers the question) and **pair tasks** (``PAIRS``
  queue, ``task_type="pair"``) that ask people whether two neighbours deserve the same
  decision ("similar" is not "same decision"), aggregated by majority vote.

A run stores its curves as CSV and Parquet under ``data_dir/reports/calibration-<id>/``
and proposes a new threshold set (linked to the run) only when something is backed.
Applying stays a separate, deliberate step (``thresholds.apply``).
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from backend.calibration import thresholds
from backend.calibration.models import CalibrationRun, ThresholdSet
from backend.calibration.settings import CalibrationSettings, get_calibration_settings
from backend.crowdwork.models import Judgment
from backend.db import utcnow
from backend.decisions.models import ItemStatus
from backend.errors import NotFound, ValidationFailed
from backend.items.models import Item
from backend.policy import Policy, get_policy
from backend.queues import service as queues
from backend.queues.models import Queue, Task
from backend.settings import Settings, get_settings

log = logging.getLogger("quorum.calibration")

KINDS = ("classifier", "similarity")
#: kind -> (upper cut name, upper band), (lower cut name, lower band); as ``ml.bands``.
LADDERS = {"ok": (("auto", "auto_ok"), ("good", "ML_GOOD")),
           "bad": (("high", "ML_BAD_HIGH"), ("middle", "ML_BAD_MIDDLE")),
           "hide": (("high", "ML_BAD_HIGH"), ("middle", "ML_HIDE_MIDDLE"))}
OVERRIDES = ("target_precision", "routing_target_precision", "reuse_target_precision",
             "confidence", "bound_method", "objective", "beta", "folds")


def effective_settings(cal: CalibrationSettings | None = None,
                       overrides: dict[str, Any] | None = None) -> CalibrationSettings:
    """``cal`` with per-run ``overrides`` (only the names in ``OVERRIDES``), validated."""
    cal = cal or get_calibration_settings()
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(over) - set(OVERRIDES)
    if unknown:
        raise ValidationFailed(f"unknown calibration overrides: {sorted(unknown)}")
    try:
        return CalibrationSettings.model_validate({**cal.model_dump(), **over})
    except ValueError as exc:
        raise ValidationFailed(f"invalid calibration overrides: {exc}") from exc


def base_set(*, session: Session, policy: Policy) -> ThresholdSet:
    """What a new proposal starts from: the newest proposal made after the active set was
    applied (so a classifier run and a similarity run build on each other), else the
    active set."""
    active = thresholds.active_threshold_set(session=session, policy=policy)
    newer = session.scalar(select(ThresholdSet).where(
        ThresholdSet.state == "proposed", ThresholdSet.version > active.version)
        .order_by(ThresholdSet.version.desc()).limit(1))
    return newer or active


def run_dir(settings: Settings, run_id: int) -> Path:
    return settings.data_dir / "reports" / f"calibration-{run_id}"


def _write_frames(directory: Path, frames: dict[str, pd.DataFrame]) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, frame in frames.items():
        frame = frame.reset_index(drop=True)
        frame.attrs = {}
        frame.to_csv(directory / f"{name}.csv", index=False)
        frame.to_parquet(directory / f"{name}.parquet", index=False)
        files[name] = str(directory / f"{name}.parquet")
    return files


def read_frame(run: CalibrationRun, name: str) -> pd.DataFrame | None:
    """A table a run saved (``curves`` or ``scores``/``pairs``), or None."""
    path = (run.result or {}).get("files", {}).get(name)
    if not path or not Path(path).exists():
        return None
    return pd.read_parquet(path)


def run_curve(run: CalibrationRun, label: str | None = None) -> pd.DataFrame:
    """One curve of a run (``label`` for classifier runs), with its ``attrs`` restored."""
    curves = read_frame(run, "curves")
    if curves is None:
        raise NotFound(f"calibration run {run.id} has no saved curves")
    if label is not None:
        curves = curves[curves["label"] == label]
    meta = (run.result or {}).get("curve_totals", {}).get(label or "reuse_distance")
    curve = curves.drop(columns=[c for c in ("kind", "label") if c in curves.columns])
    curve = curve.reset_index(drop=True)
    if meta:
        curve.attrs.update(meta)
    return curve


def _new_run(session: Session, *, kind: str, cal: CalibrationSettings, now: datetime,
             overrides: dict[str, Any] | None) -> CalibrationRun:
    run = CalibrationRun(kind=kind, status="running", as_of=now, created_at=now,
                         params={**cal.model_dump(), "overrides": overrides or {}})
    session.add(run)
    session.flush()
    return run


def get_run(*, session: Session, run_id: int) -> CalibrationRun:
    run = session.get(CalibrationRun, run_id)
    if run is None:
        raise NotFound(f"no calibration run {run_id}")
    return run


def latest_run(*, session: Session, kind: str) -> CalibrationRun | None:
    return session.scalar(select(CalibrationRun).where(
        CalibrationRun.kind == kind, CalibrationRun.status == "done")
        .order_by(CalibrationRun.id.desc()).limit(1))


def run_calibration(*, session: Session, kind: str = "classifier", now: datetime | None = None,
                    settings: Settings | None = None, cal: CalibrationSettings | None = None,
                    policy: Policy | None = None, overrides: dict[str, Any] | None = None,
                    user_id: int | None = None) -> CalibrationRun:
    """Run one calibration (see the module docstring) and return the stored run.

    ``run.result["proposed_version"]`` is the proposed threshold set's version, or None
    when nothing could be backed (then ``labels_needed`` / ``message`` say why).
    """
    if kind not in KINDS:
        raise ValidationFailed(f"calibration kind must be one of {list(KINDS)}, not {kind!r}")
    settings, policy = settings or get_settings(), policy or get_policy()
    cal = effective_settings(cal, overrides)
    now = now or utcnow()
    run = _new_run(session, kind=kind, cal=cal, now=now, overrides=overrides)
    calibrate = _calibrate_classifier if kind == "classifier" else _calibrate_similarity
    result = calibrate(session, run=run, cal=cal, settings=settings, policy=policy,
                       user_id=user_id)
    # a fresh object: an in-place change of the JSON value would not be flushed
    run.result = copy.deepcopy(result)
    run.status = "done"
    session.flush()
    return run


# ------------------------------------------------------------------ classifier
def labelled_set(*, session: Session, policy: Policy, as_of: datetime) -> list[tuple[int, str]]:
    """``(item_id, label)`` of items whose current verdict is human and a policy class."""
    return [(int(i), str(lab)) for i, lab in session.execute(
        select(ItemStatus.item_id, ItemStatus.label).where(
            ItemStatus.is_human.is_(True), ItemStatus.label.in_(policy.class_keys),
            ItemStatus.decided_at <= as_of).order_by(ItemStatus.item_id)).tuples()]


def sampling_probabilities(*, session: Session, ids: Sequence[int],
                           settings: Settings | None = None) -> np.ndarray:
    """The chance each labelled item got its current human verdict, in ``ids`` order.

    Recorded where the label was made: a spot check's task payload (its band's rate,
    ``routing/spot_checks.py``), an import row (``sampling_probability`` in the event's
    details); a spot-check task from before the rate was recorded falls back to the
    band's current ``QUORUM_SPOT_CHECK_RATES``. Anything else went to people because no
    automation decided it: probability 1."""
    from backend.decisions.models import DecisionEvent
    from backend.routing.spot_checks import KIND as SPOT_CHECK

    settings = settings or get_settings()
    rates = settings.spot_check_rates
    found: dict[int, float] = {}
    ids = list(ids)
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(ItemStatus.item_id, DecisionEvent.details, Task.payload, Queue.kind)
            .join(DecisionEvent, DecisionEvent.id == ItemStatus.event_id)
            .outerjoin(Task, Task.id == DecisionEvent.task_id)
            .outerjoin(Queue, Queue.id == Task.queue_id)
            .where(ItemStatus.item_id.in_(ids[start:start + 500])))
        for item_id, details, payload, kind in rows:
            found[int(item_id)] = label_probability(
                details=details, payload=payload, spot_check=kind == SPOT_CHECK, rates=rates)
    return np.array([found.get(int(i), 1.0) for i in ids], dtype=np.float64)


def label_probability(*, details: dict | None, payload: dict | None, spot_check: bool,
                      rates: dict[str, float]) -> float:
    """The chance one human label was drawn: the event's recorded
    ``sampling_probability``, else its task payload's, else (a spot-check task from
    before the rate was recorded) the band's current rate; 1 otherwise. Used for the
    labels calibration weighs (:func:`sampling_probabilities`) and for the spot checks
    the threshold report weighs (``backend.reports.service.spot_checks``)."""
    p = (details or {}).get("sampling_probability")
    if p is None:
        p = (payload or {}).get("sampling_probability")
    if p is None and spot_check:
        band = (payload or {}).get("band")
        p = rates.get(band, rates.get((payload or {}).get("source"), 1.0))
    try:
        value = float(p) if p is not None else 1.0
    except (TypeError, ValueError):
        value = 1.0
    return value if 0.0 < value <= 1.0 else 1.0


def _weighting(weights: np.ndarray) -> dict[str, Any]:
    """What ``result["weighting"]`` says about the labels' inverse-probability weights."""
    from ml.calibration import effective_size

    probs = pd.Series(np.round(1.0 / weights, 6)).value_counts().sort_index()
    return {"weighted": bool(np.any(weights != 1.0)), "n_labels": int(weights.size),
            "n_effective": round(effective_size(weights), 2) if weights.size else 0.0,
            "estimated_items": round(float(weights.sum()), 2),
            "by_probability": {f"{p:g}": int(n) for p, n in probs.items()}}


def _scores(session: Session, *, ids: list[int], labels: list[str], cal: CalibrationSettings,
            policy: Policy) -> tuple[np.ndarray, list[str], str, bool]:
    """Probabilities ``[n, k]`` for the labelled items, the classes, the model id, and
    whether they are out of fold."""
    from threadpoolctl import threadpool_limits

    from backend.ml_adapter.service import (
        SIGNALS,
        active_classifier,
        ensure_embeddings,
        get_encoder,
        item_texts,
        signal_frame,
    )
    from backend.ml_adapter.settings import get_ml_settings

    ml = get_ml_settings()
    encoder = get_encoder(ml)
    model, model_id = active_classifier(session=session, encoder=encoder, policy=policy)
    cols = [Item.id, Item.title, Item.description, Item.image, *[getattr(Item, s)
                                                                for s in SIGNALS]]
    by_id = {r.id: r._asdict() for start in range(0, len(ids), 500)
             for r in session.execute(select(*cols).where(Item.id.in_(ids[start:start + 500])))}
    rows = [by_id[i] for i in ids]
    X = ensure_embeddings(session=session, rows=rows, encoder=encoder, batch_size=ml.batch_size)
    sig = signal_frame(rows)
    classes = list(model.labels_)
    texts = item_texts(rows)
    if not hasattr(model, "clone"):  # the zero-shot start: nothing was fitted on labels
        return (np.asarray(model.predict_proba(X, sig, texts=texts), dtype=np.float64), classes,
                model_id, False)
    y = np.asarray(labels, dtype=object)
    proba = np.zeros((len(ids), len(classes)))
    folds = min(cal.folds, len(ids))
    order = np.random.default_rng(0).permutation(len(ids))
    with threadpool_limits(1):  # small dense fits: BLAS threads only contend (~20x slower)
        _refit_folds(model, X=X, y=y, sig=sig, order=order, folds=folds, classes=classes,
                     proba=proba, texts=texts)
    return proba, classes, model_id, True


def _encoder_id() -> str:
    from backend.ml_adapter.service import get_encoder
    from backend.ml_adapter.settings import get_ml_settings

    return str(get_encoder(get_ml_settings()).encoder_id)


def _refit_folds(model: Any, *, X: np.ndarray, y: np.ndarray, sig: pd.DataFrame,
                 order: np.ndarray, folds: int, classes: list[str], proba: np.ndarray,
                 texts: list[str]) -> None:
    for f in range(folds):
        test = order[f::folds]
        fit = np.setdiff1d(order, test)
        if len(set(y[fit])) < 2:
            raise ValidationFailed("the out-of-fold refit needs verdicts of two labels per fold")
        fold_model = model.clone().fit(X[fit], list(y[fit]), signals=sig.iloc[fit],
                                       texts=[texts[i] for i in fit])
        p = fold_model.predict_proba(X[test], sig.iloc[test], texts=[texts[i] for i in test])
        for j, lab in enumerate(fold_model.labels_):
            if lab in classes:
                proba[test, classes.index(lab)] = p[:, j]


def _choice_dict(choice: Any) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and np.isnan(v) else v)
            for k, v in choice.to_dict().items()}


def _choose(curve: pd.DataFrame, *, target: float, cal: CalibrationSettings,
            objective: str) -> Any:
    from ml.calibration import Costs, choose_threshold

    costs = Costs(false_positive=cal.cost_false_positive,
                  false_negative=cal.cost_false_negative, routed=cal.cost_routed)
    return choose_threshold(curve, target_precision=target, confidence=cal.confidence,
                            method=cal.bound_method, objective=objective,  # type: ignore[arg-type]
                            beta=cal.beta, costs=costs)


def _calibrate_classifier(session: Session, *, run: CalibrationRun, cal: CalibrationSettings,
                          settings: Settings, policy: Policy, user_id: int | None
                          ) -> dict[str, Any]:
    from ml.calibration import label_curve

    pairs = labelled_set(session=session, policy=policy, as_of=run.as_of)
    run.labelled_set = [[i, lab] for i, lab in pairs]
    run.labelled_count = len(pairs)
    base = base_set(session=session, policy=policy)
    result: dict[str, Any] = {"base_version": base.version, "labels": {}, "labels_needed": {},
                              "messages": [], "proposed_version": None}
    if len(set(lab for _, lab in pairs)) < 2:
        run.message = (f"{len(pairs)} labelled items of {len({lab for _, lab in pairs})} "
                       "label(s): calibration needs human verdicts of at least two labels")
        result["messages"].append(run.message)
        return result
    ids, labels = [i for i, _ in pairs], [lab for _, lab in pairs]
    proba, classes, model_id, oof = _scores(session, ids=ids, labels=labels, cal=cal,
                                            policy=policy)
    encoder_id = _encoder_id()
    result.update(model_id=model_id, encoder_id=encoder_id, out_of_fold=oof, classes=classes)
    # inverse-probability weights: a label from a 5 % spot check stands for 20 items
    weights = 1.0 / sampling_probabilities(session=session, ids=ids, settings=settings)
    result["weighting"] = _weighting(weights)
    curve_weights = weights if result["weighting"]["weighted"] else None
    kinds = thresholds.class_kinds(policy)
    bands = {lab: dict(cuts) for lab, cuts in base.bands.items()}
    # evidence carried from the base set (the reuse distance, labels this model lacks);
    # every deciding cut-off this model scores is assessed afresh below
    backing = dict(base.backing or {})
    backed = False
    curves, totals = [], {}
    for label in classes:
        if label not in kinds:
            continue
        curve = label_curve(proba=proba, y_true=labels, classes=classes, label=label,
                            weights=curve_weights)
        totals[label] = dict(curve.attrs)
        curves.append(curve.assign(kind="classifier", label=label))
        (upper, upper_band), (lower, lower_band) = LADDERS[kinds[label]]
        up = _choose(curve, target=cal.target_precision, cal=cal, objective=cal.objective)
        low = _choose(curve, target=cal.routing_target_precision, cal=cal,
                      objective="max_automation")
        current = dict(bands.get(label, {}))
        new = dict(current)
        if up.threshold is not None:
            new[upper] = round(float(up.threshold), 6)
        if low.threshold is not None:
            new[lower] = round(float(low.threshold), 6)
        new[lower] = min(new[lower], new[upper])
        backed |= up.threshold is not None or low.threshold is not None
        bands[label] = new
        evidence = thresholds.assess(curve=curve, value=new[upper],
                                     target=cal.target_precision, confidence=cal.confidence,
                                     method=cal.bound_method, run_id=run.id,
                                     model_id=model_id, encoder_id=encoder_id)
        backing[f"{label}.{upper}"] = evidence
        result["labels"][label] = {
            "kind": kinds[label], "cuts": [upper, lower], "bands": [upper_band, lower_band],
            "current": current, "proposed": new, "n_true": int(curve.attrs["n_positive"]),
            "backing": evidence, upper: _choice_dict(up), lower: _choice_dict(low)}
        for cut, choice in ((upper, up), (lower, low)):
            if choice.threshold is None:
                result["labels_needed"][f"{label}.{cut}"] = choice.labels_needed
                result["messages"].append(f"{label} {cut}: {choice.message}")
    if policy.groups:  # label groups (backend/calibration/groups.py)
        from backend.calibration.groups import calibrate_groups

        result["groups"], group_curves, group_backed = calibrate_groups(
            proba=proba, labels=labels, classes=classes, policy=policy, cal=cal, bands=bands,
            choose=_choose, as_dict=_choice_dict, backing=backing,
            assess=lambda curve, value: thresholds.assess(
                curve=curve, value=value, target=cal.target_precision,
                confidence=cal.confidence, method=cal.bound_method, run_id=run.id,
                model_id=model_id, encoder_id=encoder_id), weights=curve_weights)
        curves += group_curves
        backed |= group_backed
    result["curve_totals"] = totals
    scores = pd.DataFrame(proba, columns=[f"p_{c}" for c in classes])
    scores.insert(0, "sampling_probability", 1.0 / weights)
    scores.insert(0, "true_label", labels)
    scores.insert(0, "item_id", ids)
    result["files"] = _write_frames(run_dir(settings, run.id), {
        "curves": pd.concat(curves, ignore_index=True), "scores": scores})
    run.report_path = str(run_dir(settings, run.id))
    if backed:
        ts = thresholds.propose(session=session, policy=policy, bands=bands,
                                reuse_distance=base.reuse_distance,
                                auto_decide=list(base.auto_decide), calibration_run_id=run.id,
                                note=f"classifier calibration run {run.id}", user_id=user_id,
                                model_id=model_id, encoder_id=encoder_id, backing=backing)
        result["proposed_version"] = ts.version
        run.message = f"proposed threshold set v{ts.version}"
    else:
        run.message = "nothing can be backed yet: " + "; ".join(result["messages"])
    return result


# ------------------------------------------------------------------ similarity: pair tasks
def pair_tasks(session: Session, *, cal: CalibrationSettings,
               states: Sequence[str] | None = None) -> list[Task]:
    stmt = select(Task).join(Queue, Queue.id == Task.queue_id).where(
        Queue.kind == cal.pair_queue_kind, Task.task_type == "pair")
    if states:
        stmt = stmt.where(Task.state.in_(list(states)))
    return list(session.scalars(stmt.order_by(Task.id)))


def enqueue_pairs(*, session: Session, pairs: Sequence[tuple[int, int, float]], now: datetime,
                  settings: Settings | None = None, cal: CalibrationSettings | None = None,
                  encoder_id: str | None = None) -> list[int]:
    """Queue pair tasks ``(item, other_item, distance)``; returns the new task ids."""
    settings, cal = settings or get_settings(), cal or get_calibration_settings()
    payloads = [{"other_item_id": int(b), "distance": round(float(d), 6),
                 **({"encoder_id": encoder_id} if encoder_id else {})} for _, b, d in pairs]
    ids = queues.enqueue(session=session, kind=cal.pair_queue_kind, task_type="pair",
                         item_ids=[int(a) for a, _, _ in pairs], payloads=payloads, now=now,
                         settings=settings)
    session.execute(update(Queue).where(Queue.kind == cal.pair_queue_kind)
                    .values(audience=cal.pair_audience))
    return ids


@dataclass(frozen=True)
class PairSample:
    """What ``sample_pair_tasks`` queued, and why it may be fewer than asked."""

    task_ids: list[int]
    wanted: int
    anchors: int  # items with a human verdict that could anchor a new pair task
    near: int  # new candidate pairs within the reuse distance
    far: int  # ... beyond it, up to the exploration limit
    reuse_distance: float
    far_limit: float

    @property
    def message(self) -> str | None:
        """Why fewer than ``wanted`` were queued, in a sentence (None if all were)."""
        if len(self.task_ids) >= self.wanted:
            return None
        return (f"queued {len(self.task_ids)} of {self.wanted}: {self.anchors} items with a "
                f"human verdict can still anchor a pair (one pair task per item, a pair is "
                f"never asked twice) and their neighbours give {self.near} new pairs within "
                f"the reuse distance {self.reuse_distance:g} and {self.far} between it and "
                f"{self.far_limit:g} (QUORUM_CALIBRATION_PAIR_MAX_DISTANCE_FACTOR, "
                "..._MAX_REUSE_DISTANCE); more human verdicts give more pairs")


def sample_pairs(*, session: Session, n: int | None = None, now: datetime | None = None,
                 settings: Settings | None = None, cal: CalibrationSettings | None = None,
                 policy: Policy | None = None, seed: int = 0) -> list[int]:
    """``sample_pair_tasks``' new task ids."""
    return sample_pair_tasks(session=session, n=n, now=now, settings=settings, cal=cal,
                             policy=policy, seed=seed).task_ids


def sample_pair_tasks(*, session: Session, n: int | None = None, now: datetime | None = None,
                      settings: Settings | None = None, cal: CalibrationSettings | None = None,
                      policy: Policy | None = None, seed: int = 0) -> PairSample:
    """Queue up to ``n`` pair tasks from neighbour lookups of items with human verdicts,
    half at distances up to the current reuse distance and half beyond it (up to
    ``pair_max_distance_factor`` times it, never past ``max_reuse_distance``), each half
    spread over its range of neighbour distances; where one side has too few candidates
    the other side fills the rest. An item anchors one pair task ever (one per item and
    queue), and a pair is never asked twice."""
    from backend.ml_adapter.service import ensure_embeddings, get_encoder, get_store, sync_index
    from backend.ml_adapter.settings import get_ml_settings

    settings, cal, policy = settings or get_settings(), cal or get_calibration_settings(), \
        policy or get_policy()
    n = n or cal.pair_sample_size
    now = now or utcnow()
    ml = get_ml_settings()
    reuse = base_set(session=session, policy=policy).reuse_distance or ml.default_reuse_distance
    encoder = get_encoder(ml)
    store = get_store(encoder=encoder, settings=settings, ml=ml, session=session)
    sync_index(session=session, encoder=encoder, store=store, batch_size=ml.batch_size)
    asked = {tuple(sorted((t.item_id, int((t.payload or {}).get("other_item_id", -1)))))
             for t in pair_tasks(session, cal=cal)}
    busy = {t.item_id for t in pair_tasks(session, cal=cal)}  # one pair task per anchor
    anchors = [i for i in session.scalars(select(ItemStatus.item_id).where(
        ItemStatus.is_human.is_(True), ItemStatus.label.in_(policy.class_keys))) if i not in busy]
    random.Random(seed).shuffle(anchors)
    n_anchors = len(anchors)
    anchors = anchors[:max(20 * n, 500)]
    far_limit = min(reuse * cal.pair_max_distance_factor, cal.max_reuse_distance)
    if not anchors:
        return PairSample(task_ids=[], wanted=n, anchors=0, near=0, far=0,
                          reuse_distance=reuse, far_limit=far_limit)
    rows = [r._asdict() for start in range(0, len(anchors), 500) for r in session.execute(
        select(Item.id, Item.title, Item.description, Item.image)
        .where(Item.id.in_(anchors[start:start + 500])))]
    vecs = ensure_embeddings(session=session, rows=rows, encoder=encoder, batch_size=ml.batch_size)
    nids, dists = store.search(vecs, cal.pair_neighbours + 1)
    near: list[tuple[float, int, int, float]] = []
    far: list[tuple[float, int, int, float]] = []
    for row, ids_row, d_row in zip(rows, nids, dists, strict=True):
        a = int(row["id"])
        for b, d in zip(ids_row.tolist(), d_row.tolist(), strict=True):
            if b < 0 or b == a or not np.isfinite(d):
                continue
            if d <= reuse:
                near.append((abs(d - reuse), a, int(b), float(d)))
            elif d <= far_limit:
                far.append((abs(d - reuse), a, int(b), float(d)))
    picked: list[tuple[int, int, float]] = []
    used: set[int] = set()
    fresh_sides = {}
    for name, group in (("near", near), ("far", far)):
        group = sorted(group, key=lambda c: c[3])
        fresh_sides[name] = [c for c in group if tuple(sorted((c[1], c[2]))) not in asked]

    def take(side: str, quota: int) -> int:
        # spread over the side's distances: walk the sorted candidates with a stride
        fresh = fresh_sides[side]
        stride = max(1, len(fresh) // max(quota, 1))
        taken = 0
        for offset in range(stride):
            for _, a, b, d in fresh[offset::stride]:
                key = tuple(sorted((a, b)))
                if taken >= quota or a in used or key in asked:
                    continue
                picked.append((a, b, d))
                used.add(a)
                asked.add(key)
                taken += 1
        return taken

    short = (n // 2) - take("near", n // 2)
    short = (n - n // 2 + short) - take("far", n - n // 2 + short)
    if short > 0:  # the far side ran short too: back to the near side for the rest
        take("near", short)
    ids = enqueue_pairs(session=session, pairs=picked, now=now, settings=settings, cal=cal,
                        encoder_id=encoder.encoder_id)
    return PairSample(task_ids=ids, wanted=n, anchors=n_anchors,
                      near=len({(a, b) for _, a, b, _ in near}),
                      far=len({(a, b) for _, a, b, _ in far}), reuse_distance=reuse,
                      far_limit=far_limit)


def record_pair_answer(*, session: Session, task_id: int, answer: str, worker_id: str,
                       now: datetime, user_id: int | None = None, worker_kind: str = "moderator",
                       cal: CalibrationSettings | None = None) -> Judgment:
    """One person's answer (``same`` / ``different``) to a pair task; the task is done
    once it has ``pair_overlap`` answers. (A moderator answering through the work view
    goes through ``queues.work.submit_verdict``, which records the same Judgment.)"""
    from backend.queues.work import PAIR_ANSWERS

    cal = cal or get_calibration_settings()
    task = queues.get_task(session=session, task_id=task_id)
    if task.task_type != "pair":
        raise ValidationFailed(f"task {task_id} is not a pair task")
    if answer not in PAIR_ANSWERS:
        raise ValidationFailed(f"a pair task is answered with one of {list(PAIR_ANSWERS)}")
    if task.state == "done":
        raise ValidationFailed(f"pair task {task_id} already has its answers")
    judgment = Judgment(item_id=task.item_id, task_id=task.id, worker_kind=worker_kind,
                        user_id=user_id, worker_id=worker_id, label=answer, created_at=now)
    session.add(judgment)
    session.flush()
    if pair_task_answered(session=session, task=task, cal=cal):
        queues.complete(session=session, task=task, now=now)
    return judgment


def pair_task_answered(*, session: Session, task: Task,
                       cal: CalibrationSettings | None = None) -> bool:
    """Whether a pair task has its ``pair_overlap`` answers (then it is done)."""
    cal = cal or get_calibration_settings()
    n = session.scalar(select(func.count()).select_from(Judgment)
                       .where(Judgment.task_id == task.id)) or 0
    return n >= cal.pair_overlap


def pair_votes(*, session: Session, cal: CalibrationSettings,
               as_of: datetime | None = None) -> pd.DataFrame:
    """Aggregated pair answers: ``pair_id`` (task id), ``item_id``, ``other_item_id``,
    ``distance``, ``n_votes``, ``n_same``, ``same`` (strict majority; a tie is not same),
    ``encoder_id`` (the encoder that measured the distance; None if not recorded).

    Every judgment on a pair task is a vote, whoever gave it — moderators and crowd
    workers alike (workers keyed by kind, so a crowd id never merges with a username) —
    except crowd answers the review rejected or of workers banned in their pool."""
    from backend.crowdwork.models import CrowdPool
    from ml.calibration import aggregate_pair_votes

    tasks = {t.id: t for t in pair_tasks(session, cal=cal)}
    columns = ["pair_id", "item_id", "other_item_id", "distance", "n_votes", "n_same", "same",
               "encoder_id"]
    if not tasks:
        return pd.DataFrame(columns=columns)
    ids = list(tasks)
    stmt = select(Judgment.task_id, Judgment.worker_kind, Judgment.worker_id, Judgment.user_id,
                  Judgment.label, Judgment.assignment_status, Judgment.crowd_pool_id)
    if as_of is not None:
        stmt = stmt.where(Judgment.created_at <= as_of)
    rows = [r for start in range(0, len(ids), 500)
            for r in session.execute(stmt.where(Judgment.task_id.in_(ids[start:start + 500])))]
    pools = sorted({r.crowd_pool_id for r in rows if r.crowd_pool_id is not None})
    banned = {pid: set((config or {}).get("banned", [])) for pid, config in session.execute(
        select(CrowdPool.id, CrowdPool.config).where(CrowdPool.id.in_(pools)))} if pools else {}
    votes = pd.DataFrame(
        [{"pair_id": r.task_id, "worker": f"{r.worker_kind}:{r.worker_id or r.user_id}",
          "same": r.label == "same"} for r in rows
         if r.assignment_status != "REJECTED"
         and r.worker_id not in banned.get(r.crowd_pool_id, ())],
        columns=["pair_id", "worker", "same"])
    if votes.empty:
        return pd.DataFrame(columns=columns)
    out = aggregate_pair_votes(votes)
    out["item_id"] = [tasks[int(p)].item_id for p in out["pair_id"]]
    out["other_item_id"] = [int((tasks[int(p)].payload or {})["other_item_id"])
                            for p in out["pair_id"]]
    out["distance"] = [float((tasks[int(p)].payload or {})["distance"]) for p in out["pair_id"]]
    out["encoder_id"] = [(tasks[int(p)].payload or {}).get("encoder_id") for p in out["pair_id"]]
    return out[columns]


#: at most this many labelled items anchor a history pair per run (a seeded sample)
HISTORY_PAIR_ANCHORS = 50_000


def history_pairs(*, session: Session, policy: Policy, as_of: datetime | None = None,
                  limit: int = HISTORY_PAIR_ANCHORS, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """Pairs of labelled neighbours from the history (``ml.similarity.
    labelled_neighbour_pairs``): for each item with a human verdict of a policy class
    (imported, moderator, crowd; at most ``limit``, a seeded sample), its nearest
    neighbour among the others, at the current encoder's distance. Returns the pairs
    (``item_id``, ``other_item_id``, ``distance``, ``same``) and the encoder id."""
    from backend.ml_adapter.service import ensure_embeddings, get_encoder, get_store, sync_index
    from backend.ml_adapter.settings import get_ml_settings
    from ml.similarity import labelled_neighbour_pairs

    ml = get_ml_settings()
    encoder = get_encoder(ml)
    empty = pd.DataFrame(columns=["item_id", "other_item_id", "distance", "same"])
    stmt = select(ItemStatus.item_id, ItemStatus.label).where(
        ItemStatus.is_human.is_(True), ItemStatus.label.in_(policy.class_keys))
    if as_of is not None:
        stmt = stmt.where(ItemStatus.decided_at <= as_of)
    labels = {int(i): str(lab) for i, lab in session.execute(stmt).tuples()}
    if len(labels) < 2:
        return empty, encoder.encoder_id
    store = get_store(encoder=encoder, session=session, ml=ml)
    sync_index(session=session, encoder=encoder, store=store, batch_size=ml.batch_size)
    anchors = sorted(labels)
    if len(anchors) > limit:
        anchors = sorted(random.Random(seed).sample(anchors, limit))
    frames = []
    k = min(max(ml.neighbours, 2) + 1, len(store)) if len(store) else 0
    if k < 2:
        return empty, encoder.encoder_id
    for start in range(0, len(anchors), 2000):
        chunk = anchors[start:start + 2000]
        rows = [r._asdict() for part in range(0, len(chunk), 500) for r in session.execute(
            select(Item.id, Item.title, Item.description, Item.image)
            .where(Item.id.in_(chunk[part:part + 500])))]
        vecs = ensure_embeddings(session=session, rows=rows, encoder=encoder,
                                 batch_size=ml.batch_size)
        nids, dists = store.search(vecs, k)
        frames.append(labelled_neighbour_pairs([r["id"] for r in rows], nids, dists, labels))
    pairs = pd.concat(frames, ignore_index=True) if frames else empty
    if len(frames) > 1:  # a mutual pair split across chunks counts once
        key = pairs[["item_id", "other_item_id"]].min(axis=1).astype(str) + ":" + pairs[
            ["item_id", "other_item_id"]].max(axis=1).astype(str)
        pairs = pairs[~key.duplicated()].reset_index(drop=True)
    return pairs, encoder.encoder_id


def _by_reused_label(pairs: pd.DataFrame, threshold: float | None,
                     cal: CalibrationSettings) -> dict[str, Any]:
    """Per label reuse would copy: its pairs at or below ``threshold`` (all pairs when
    nothing is chosen), the share that are the same and the one-sided lower bound."""
    from ml.calibration_bounds import proportion_bounds

    known = pairs[pairs["reused_label"].notna()]
    if threshold is not None:
        known = known[known["distance"] <= threshold]
    out: dict[str, Any] = {}
    for label, part in known.groupby("reused_label"):
        n, right = len(part), int(part["same"].astype(bool).sum())
        lower, _ = proportion_bounds(successes=right, trials=n, confidence=cal.confidence,
                                     method=cal.bound_method, sided="one")  # type: ignore[arg-type]
        out[str(label)] = {"n": n, "precision": right / n, "lower": float(lower)}
    return out


def _calibrate_similarity(session: Session, *, run: CalibrationRun, cal: CalibrationSettings,
                          settings: Settings, policy: Policy, user_id: int | None
                          ) -> dict[str, Any]:
    from ml.calibration import choose_reuse_distance, similarity_curve

    tasks = pair_votes(session=session, cal=cal, as_of=run.as_of)
    tasks["source"] = "pair_task"
    if "reused_label" not in tasks.columns:  # a pair task asks "same?", not which label
        tasks["reused_label"] = None
    history, history_encoder = history_pairs(session=session, policy=policy, as_of=run.as_of)
    history = history.assign(pair_id=None, n_votes=None, n_same=None, source="history",
                             encoder_id=history_encoder)
    if "reused_label" not in history.columns:  # no pairs at all
        history["reused_label"] = None
    pairs = pd.concat([frame for frame in (tasks, history[tasks.columns]) if len(frame)],
                      ignore_index=True) if len(tasks) or len(history) else tasks
    run.labelled_set = pairs.to_dict(orient="records") if len(pairs) else []
    run.labelled_set = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                        for r in run.labelled_set]
    run.labelled_count = len(pairs)
    base = base_set(session=session, policy=policy)
    result: dict[str, Any] = {"base_version": base.version, "current": base.reuse_distance,
                              "proposed_version": None, "labels_needed": {}, "messages": [],
                              "pairs": {"pair_tasks": int(len(tasks)),
                                        "history": int(len(history))}}
    if pairs.empty:
        run.message = ("no answered pair tasks and no two labelled neighbours in the history: "
                       "import or decide some items, or sample pair tasks with `quorum "
                       "calibrate pairs` and let people answer them")
        result["messages"].append(run.message)
        return result
    result["messages"].append(
        f"{len(history)} pair(s) of labelled neighbours from the history (each labelled "
        f"item and its nearest labelled neighbour: same label or not) and {len(tasks)} "
        "answered pair task(s)")
    # the history pairs were measured with the current encoder: calibrate for it
    encoders = [e for e in pairs["encoder_id"].tolist() if e]
    encoder_id = history_encoder if len(history) else (encoders[-1] if encoders else None)
    if encoder_id is not None and len(set(encoders)) > 1:
        keep = pairs["encoder_id"] == encoder_id
        result["messages"].append(f"{int((~keep).sum())} pair(s) measured with another "
                                  f"encoder left out; calibrating for {encoder_id}")
        pairs = pairs[keep].reset_index(drop=True)
    result["encoder_id"] = encoder_id
    curve = similarity_curve(pairs[["distance", "same"]])
    result["curve_totals"] = {"reuse_distance": dict(curve.attrs)}
    # the distance must hold for each label reused too (history pairs know the label)
    choice = choose_reuse_distance(pairs[["distance", "same", "reused_label"]],
                                   target_precision=cal.reuse_target_precision,
                                   confidence=cal.confidence, method=cal.bound_method)
    result["reuse_distance"] = _choice_dict(choice)
    result["by_reused_label"] = _by_reused_label(pairs, choice.threshold, cal)
    result["files"] = _write_frames(run_dir(settings, run.id), {
        "curves": curve.assign(kind="similarity", label="reuse_distance"), "pairs": pairs})
    run.report_path = str(run_dir(settings, run.id))
    if choice.threshold is None:
        result["labels_needed"]["reuse_distance"] = choice.labels_needed
        result["messages"].append(f"reuse distance: {choice.message}")
        run.message = "nothing can be backed yet: " + choice.message
    else:
        chosen = float(choice.threshold)
        if chosen > cal.max_reuse_distance:
            result["messages"].append(
                f"reuse distance {chosen:.4f} capped at QUORUM_CALIBRATION_MAX_REUSE_DISTANCE "
                f"{cal.max_reuse_distance}")
            chosen = cal.max_reuse_distance
        chosen = round(chosen, 6)
        evidence = thresholds.assess(curve=curve, value=chosen,
                                     target=cal.reuse_target_precision,
                                     confidence=cal.confidence, method=cal.bound_method,
                                     run_id=run.id, encoder_id=encoder_id)
        result["backing"] = evidence
        ts = thresholds.propose(session=session, policy=policy, bands=dict(base.bands),
                                reuse_distance=chosen,
                                auto_decide=list(base.auto_decide), calibration_run_id=run.id,
                                note=f"similarity calibration run {run.id}", user_id=user_id,
                                model_id=base.model_id, encoder_id=encoder_id or base.encoder_id,
                                backing={**(base.backing or {}),
                                         thresholds.REUSE_KEY: evidence})
        result["proposed_version"] = ts.version
        run.message = f"proposed threshold set v{ts.version}"
    return result


# ------------------------------------------------------------------ what-if
def todays_scores(*, session: Session, day: Any = None, settings: Settings | None = None,
                  model_id: str | None = None) -> tuple[pd.DataFrame, Any]:
    """The newest ``ItemScore`` per item scored on ``day`` (default: the last day with
    scores), one column per label: the day's score distribution. ``model_id``: that
    model's scores only (a champion and a challenger both score every item)."""
    from backend.items.models import ItemScore

    settings = settings or get_settings()
    of_model = [ItemScore.model_id == model_id] if model_id else []
    last = session.scalar(select(func.max(ItemScore.created_at)).where(*of_model))
    if last is None:
        return pd.DataFrame(), day
    day = day or queues.queue_day(last, settings)
    start, end = day_bounds(day, settings)
    rows = session.execute(select(ItemScore.item_id, ItemScore.scores).where(
        ItemScore.created_at >= start, ItemScore.created_at < end, *of_model)
        .order_by(ItemScore.item_id, ItemScore.id)).all()
    latest = {item_id: scores for item_id, scores in rows}
    return pd.DataFrame.from_dict(latest, orient="index").fillna(0.0), day


def day_bounds(day: Any, settings: Settings) -> tuple[datetime, datetime]:
    """UTC bounds of a calendar day in the queue time zone."""
    from datetime import UTC, time, timedelta
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(settings.queue_timezone)
    start = datetime.combine(day, time(0), tzinfo=tz)
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


def what_if_cuts(*, ts: ThresholdSet, policy: Policy, cuts: dict[str, float] | None
                 ) -> dict[str, dict[str, float]]:
    """``ts.bands`` with ``cuts`` (``{"<label>.<cut>": value}``) changed, validated: a
    policy label, one of its cut-offs, a number in [0, 1], upper cut-off >= lower."""
    kinds = thresholds.class_kinds(policy)
    bands = {lab: dict(c) for lab, c in ts.bands.items()}
    for key, value in (cuts or {}).items():
        label, _, cut = key.partition(".")
        if label not in kinds or label not in bands:
            raise ValidationFailed(f"{key!r}: {label!r} is not a policy label; labels are "
                                   f"{sorted(kinds)}")
        if cut not in bands[label]:
            raise ValidationFailed(f"{key!r}: {label} has cut-offs {sorted(bands[label])}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValidationFailed(f"{key!r}: {value!r} is not a number") from None
        if not 0.0 <= number <= 1.0:
            raise ValidationFailed(f"{key!r}: a cut-off is a probability between 0 and 1, "
                                   f"not {number:g}")
        bands[label][cut] = number
    for label, cut_values in bands.items():
        if label not in kinds:
            continue
        (upper, _), (lower, _) = LADDERS[kinds[label]]
        if cut_values[upper] < cut_values[lower]:
            raise ValidationFailed(f"{label}: the {upper} cut-off ({cut_values[upper]:g}) must "
                                   f"not be below the {lower} cut-off ({cut_values[lower]:g})")
    return bands


def what_if(*, session: Session, version: int | None = None, run_id: int | None = None,
            day: Any = None, settings: Settings | None = None,
            cal: CalibrationSettings | None = None,
            policy: Policy | None = None,
            cuts: dict[str, float] | None = None) -> dict[str, Any]:
    """Tomorrow at threshold set ``version`` (default: the newest proposal, else the
    active set), from ``day``'s scores and a classifier run's curves (default: the
    latest): expected items per band, automatic share (live bands only: a band in shadow
    decides nothing), expected precision of automation with its interval, automation share,
    people's work (moderators, crowd) of what goes to people and saved by what does not.

    ``cuts`` (``{"<label>.<cut>": value}``): pick cut-offs of your own on top of the set.
    A changed deciding cut-off decides in the what-if only when the run's curve backs it
    (the one-sided lower bound at the target, as ``thresholds.assess``) and its band is
    in the set's auto-decide list: what it would be if the set were edited and applied.
    Each label's deciding cut-off comes back in ``cut_states`` (value, state, lower bound,
    reason)."""
    from ml.calibration import proportion_bounds
    from ml.calibration import what_if as ml_what_if

    settings, cal, policy = settings or get_settings(), cal or get_calibration_settings(), \
        policy or get_policy()
    ts = (thresholds.get_version(session=session, version=version) if version
          else base_set(session=session, policy=policy))
    run = get_run(session=session, run_id=run_id) if run_id else \
        latest_run(session=session, kind="classifier")
    out: dict[str, Any] = {"version": ts.version, "state": ts.state, "run_id": None,
                           "day": None, "labels": [], "bands": {}, "n_items": 0, "n_auto": 0,
                           "n_routed": 0, "auto_precision": None, "auto_precision_lower": None,
                           "auto_precision_upper": None, "crowd_cost": 0.0,
                           "moderator_cost": 0.0, "moderator_cost_avoided": 0.0,
                           "crowd_cost_avoided": 0.0, "automation_share": None,
                           "cuts": dict(cuts or {}), "cut_states": {},
                           "confidence": cal.confidence, "method": cal.bound_method,
                           "message": None, "note": None}
    bands = what_if_cuts(ts=ts, policy=policy, cuts=cuts)
    if run is None or read_frame(run, "curves") is None:
        out["message"] = "no classifier calibration run with curves yet: run `quorum calibrate`"
        return out
    # the run's model's scores: its curves say nothing about another model's
    model_id = (run.result or {}).get("model_id")
    scores, day = todays_scores(session=session, day=day, settings=settings,
                                model_id=model_id)
    if scores.empty and model_id:
        scores, day = todays_scores(session=session, day=day, settings=settings)
        out["note"] = (f"no item was scored by {model_id} yet: these are another model's "
                       "scores read on its curves, a rough projection")
    out.update(run_id=run.id, day=str(day) if day else None)
    if scores.empty:
        out["message"] = "no classifier scores to project from"
        return out
    kinds = thresholds.class_kinds(policy)
    live = thresholds.live_map(ts, policy=policy)
    labels = [c for c in scores.columns if c in kinds and c in (run.result or {}).get(
        "curve_totals", {})]
    matrix = scores[labels].to_numpy(dtype=np.float64)
    top = matrix.argmax(axis=1)
    auto_n = auto_tp = 0
    n_auto = 0
    for j, label in enumerate(labels):
        (upper, upper_band), (lower, lower_band) = LADDERS[kinds[label]]
        label_cuts = bands[label]
        s = np.where(top == j, matrix[:, j], -np.inf)
        curve = run_curve(run, label)
        state = live[label]
        if not thresholds._same(label_cuts[upper], state.value):  # a cut-off of your own
            ev = thresholds.assess(curve=curve, value=label_cuts[upper],
                                   target=cal.target_precision, confidence=cal.confidence,
                                   method=cal.bound_method, run_id=run.id)
            on = upper_band in (ts.auto_decide or [])
            lower_text = "undefined" if ev["lower"] is None else f"{ev['lower']:.2%}"
            reason = (f"{'backed' if ev['backed'] else 'not backed'} by run {run.id}: lower "
                      f"bound {lower_text} {'>=' if ev['backed'] else '<'} target "
                      f"{cal.target_precision:.0%} on {ev['n_auto']} of {ev['n_labelled']} "
                      "labels" + ("" if on else f"; {upper_band} is not in the set's "
                                  "auto-decide list"))
            state = thresholds.BandState(
                key=state.key, label=label, band=upper_band, value=label_cuts[upper],
                state="live" if ev["backed"] and on else ("shadow" if on else "off"),
                reason=reason, lower=ev["lower"], precision=ev["precision"],
                n_auto=ev["n_auto"],
                n_labelled=ev["n_labelled"], target=ev["target"], run_id=run.id)
        out["cut_states"][label] = {"key": state.key, "value": state.value,
                                    "state": state.state, "lower": state.lower,
                                    "reason": state.reason}
        # only a live band decides: one in shadow routes its items to people
        auto = [upper_band] if state.state == "live" else []
        w = ml_what_if(scores=s, curve=curve,
                       thresholds={upper_band: label_cuts[upper], lower_band: label_cuts[lower]},
                       auto_bands=auto, confidence=cal.confidence,
                       method=cal.bound_method)  # type: ignore[arg-type]
        for rec in w.bands.to_dict(orient="records"):
            if rec["band"] == "rest":
                continue
            rec = {k: (None if isinstance(v, float) and np.isnan(v) else v)
                   for k, v in rec.items()}
            out["labels"].append({"label": label, **rec})
            out["bands"][rec["band"]] = out["bands"].get(rec["band"], 0) + int(rec["n_items"])
            if rec["auto"]:
                n_auto += int(rec["n_items"])
                auto_n += int(rec["labelled_n"])
                auto_tp += int(round((rec["precision"] or 0.0) * rec["labelled_n"]))
    n = len(scores)
    out["bands"]["rest"] = n - sum(out["bands"].values())
    lo, hi = proportion_bounds(successes=auto_tp, trials=auto_n, confidence=cal.confidence,
                               method=cal.bound_method, sided="two")  # type: ignore[arg-type]
    routed = n - n_auto
    out.update(n_items=n, n_auto=n_auto, n_routed=routed,
               auto_precision=auto_tp / auto_n if auto_n else None,
               auto_precision_lower=None if np.isnan(lo) else float(lo),
               auto_precision_upper=None if np.isnan(hi) else float(hi),
               crowd_cost=round(cal.crowd_cost_per_item * cal.crowd_overlap * routed, 4),
               crowd_cost_avoided=round(cal.crowd_cost_per_item * cal.crowd_overlap * n_auto, 4),
               moderator_cost=round(cal.moderator_cost_per_item * routed, 4),
               moderator_cost_avoided=round(cal.moderator_cost_per_item * n_auto, 4),
               automation_share=n_auto / n if n else None)
    return out
