"""Crowd status and the seed's "Toloka metrics", read from our judgments (no Toloka calls)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from backend.crowdwork import gold
from backend.crowdwork.models import CrowdPool, CrowdTask
from backend.crowdwork.service import answers_frame, get_pool, pool_config
from backend.errors import ValidationFailed
from backend.queues.models import Queue
from crowd.quality import control_cost, crowd_metrics, reliability, worker_metrics


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else round(value, 4)


#: A pool's tasks counted by how they left it (``open``: not yet), before any is counted.
_NO_TASKS = {"golden": 0, "decided": 0, "moderators": 0, "tie": 0, "open": 0}


def pool_rows(*, session: Session, pool_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """One dict per pool: queue, kind (``item`` / ``pair``), state, method, items (pairs in a
    pair pool), progress, answers, spend, golden accuracy."""
    stmt = (select(CrowdPool, Queue.name).outerjoin(Queue, Queue.id == CrowdPool.queue_id)
            .order_by(CrowdPool.id))
    if pool_ids is not None:
        stmt = stmt.where(CrowdPool.id.in_(pool_ids))
    pools = session.execute(stmt).all()
    if not pools:
        return []
    ids = [p.id for p, _ in pools]
    counts: dict[int, dict[str, int]] = {}
    for pid, golden, outcome, n in session.execute(
            select(CrowdTask.pool_id, CrowdTask.is_golden, CrowdTask.outcome, func.count())
            .where(CrowdTask.pool_id.in_(ids))
            .group_by(CrowdTask.pool_id, CrowdTask.is_golden, CrowdTask.outcome)):
        c = counts.setdefault(pid, dict(_NO_TASKS))
        key = "golden" if golden else (outcome or "open")
        c[key] = c.get(key, 0) + n
    answers = answers_frame(session=session, pool_ids=ids)
    gold = answers[answers["is_golden"].astype(bool)
                   & (answers["assignment_status"] != "REJECTED")]
    # a plain dict: Series.get(int) on an empty (object-indexed) Series falls back to a
    # position (pandas' FutureWarning)
    acc = {int(k): float(v) for k, v in (gold["label"] == gold["golden_label"])
           .groupby(gold["crowd_pool_id"]).mean().items()}
    out = []
    for pool, queue in pools:
        c = counts.get(pool.id, _NO_TASKS)
        items = pool.task_count
        resolved = c["decided"] + c["moderators"] + c["tie"]
        out.append({
            "id": pool.id, "queue": queue or pool.config.get("queue"), "kind": pool.kind,
            "state": pool.state, "method": pool.aggregation_method,
            "toloka_pool_id": pool.toloka_pool_id,
            "items": items, "golden_tasks": c["golden"], "decided": c["decided"],
            "to_moderators": c["moderators"], "ties": c["tie"], "open": c["open"],
            "progress": round(resolved / items, 4) if items else None,
            "answers": pool.answers_count, "spend": round(pool.spend, 4),
            "golden_accuracy": _num(acc.get(pool.id)),
            "rounds": int(pool.config.get("rounds", 0)),
            "banned": list(pool.config.get("banned", [])),
            "created_at": pool.created_at,
        })
    return out


def pool_detail(*, session: Session, pool_id: int) -> dict[str, Any]:
    pool = get_pool(session=session, pool_id=pool_id)
    row = pool_rows(session=session, pool_ids=[pool.id])[0]
    row["config"] = pool.config.get("crowd", {})
    answers = answers_frame(session=session, pool_ids=[pool.id])
    paid = answers[answers["assignment_status"] != "REJECTED"]
    row["workers"] = _records(worker_metrics(paid)) if len(paid) else []
    return row


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for rec in df.to_dict("records"):
        out.append({k: (_num(v) if isinstance(v, float) else v) for k, v in rec.items()})
    return out


def overlap_effect(*, session: Session) -> list[dict[str, Any]]:
    """Per pool: answers per real item spent vs always asking ``max_overlap``, and the share
    of items decided on the first ``overlap`` answers (the dynamic-overlap saving)."""
    rows = []
    for pool in session.scalars(select(CrowdPool).order_by(CrowdPool.id)):
        cfg = pool_config(pool)
        stats = session.execute(
            select(func.count(), func.sum(CrowdTask.overlap),
                   func.sum(case((CrowdTask.overlap <= cfg.overlap, 1), else_=0)))
            .where(CrowdTask.pool_id == pool.id, CrowdTask.is_golden.is_(False),
                   CrowdTask.outcome.is_not(None))).one()
        n, spent, first = stats[0] or 0, stats[1] or 0, stats[2] or 0
        rows.append({
            "pool_id": pool.id, "overlap": cfg.overlap, "max_overlap": cfg.max_overlap,
            "resolved_items": n,
            "answers_per_item": round(spent / n, 3) if n else None,
            "decided_on_first_overlap": round(first / n, 3) if n else None,
            "saving_vs_max_overlap": round(1 - spent / (n * cfg.max_overlap), 3) if n else None,
        })
    return rows


def crowd_report(*, session: Session, by: str = "pool", top_workers: int = 20,
                 exposure_cap: int | None = None) -> dict[str, Any]:
    """Per pool (or per day): workers, items, answers, cost per item, median time per item,
    golden accuracy, agreement; per worker golden accuracy; the effect of dynamic overlap."""
    if by not in ("pool", "day"):
        raise ValidationFailed("group the report by 'pool' or 'day'")
    if exposure_cap is None:
        from backend.crowdwork.settings import get_crowd_settings

        exposure_cap = get_crowd_settings().golden_max_exposures
    golden = gold.coverage(session, cap=exposure_cap)
    answers = answers_frame(session=session)
    paid = answers[answers["assignment_status"] != "REJECTED"]
    if paid.empty:
        return {"by": by, "groups": [], "overall": None, "workers": [], "overlap": [],
                "control": control_cost(paid), "reliability": [], "gold": golden}
    if by == "pool":
        paid = paid.assign(pool_id=paid["crowd_pool_id"])
    groups = crowd_metrics(paid, by=by).reset_index()
    key = "pool_id" if by == "pool" else "day"
    groups[key] = groups[key].astype(str)
    overall = crowd_metrics(paid.assign(pool_id="all"), by="pool").reset_index()
    workers = worker_metrics(paid).sort_values(["golden_accuracy", "answers"],
                                               ascending=[True, False], na_position="last")
    return {"by": by, "groups": _records(groups), "overall": _records(overall)[0],
            "workers": _records(workers.head(top_workers)),
            "n_workers": int(len(workers)), "overlap": overlap_effect(session=session),
            "control": control_cost(paid),
            "reliability": _records(confidence_reliability(session=session)),
            "gold": golden}


def confidence_reliability(*, session: Session) -> pd.DataFrame:
    """Reliability-diagram data of the crowd's stated confidence: its decisions that a
    person decided again later (spot checks, appeals, moderators), per bin of stated
    confidence — how often the person agreed, with a 95% interval
    (`crowd.quality.reliability`)."""
    from sqlalchemy.orm import aliased

    from backend.decisions.models import DecisionEvent

    later = aliased(DecisionEvent)
    first_human = (select(later.label).where(later.item_id == DecisionEvent.item_id,
                                             later.is_human.is_(True),
                                             later.id > DecisionEvent.id)
                   .order_by(later.id).limit(1).scalar_subquery())
    rows = session.execute(
        select(DecisionEvent.confidence, DecisionEvent.label, first_human)
        .where(DecisionEvent.source == "crowd", DecisionEvent.confidence.is_not(None))).all()
    checked = [(float(c), lab == human) for c, lab, human in rows if human is not None]
    if not checked:
        return reliability(pd.Series(dtype=float), pd.Series(dtype=bool))
    conf, right = zip(*checked, strict=True)
    return reliability(pd.Series(conf), pd.Series(right))
