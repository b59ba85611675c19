"""Pair pools: the crowd answers pair tasks ("do these two items deserve the same decision?").

A pair queue (``QUORUM_CALIBRATION_PAIR_QUEUE_KIND``, filled by
`backend.calibration.service.sample_pairs`) is pushed like a label queue, with crowd's
pair task spec: each pair task becomes a Toloka task whose ``item_id`` input is the pair
key ``"<anchor>|<other>"`` and whose cards are the two items; workers answer
``same_decision`` yes / no. Our ``CrowdTask`` maps the anchor item to the queue's pair
task (one pair task per anchor and queue, so the anchor identifies it in the pool).

- **Overlap**: ``QUORUM_CALIBRATION_PAIR_OVERLAP`` answers per pair (the number a
  moderator-answered pair gets); a tie or a majority share under
  ``QUORUM_CROWD_TARGET_CONFIDENCE`` (2 of 3 is 0.67) gets one more answer at a time, up
  to ``max(QUORUM_CROWD_MAX_OVERLAP, pair overlap)`` — crowd-kit's dynamic overlap, as
  for items. Aggregation is plain majority vote (``mv`` without gold weights), as the
  calibration reads it.
- **Control pairs**: pairs of golden items with a policy label, "yes" iff their labels
  are equal (alternately same and different where the labels allow), as many as a label
  pool's control tasks; they drive the same review and bans. None when
  ``QUORUM_CROWD_GOLDEN_PER_SUITE=0``. No training pool.
- **Answers** are judgments on the pair task (``same`` / ``different``), never decision
  events. A pair is done when its majority is sure enough (``decided``), or at the
  maximum overlap (its majority, or a ``tie``: the calibration counts it as not same), or
  with what it has when the crowd stops answering; a pair nobody answered goes back to
  its queue for a later push. A ban does not reopen pairs already done; the banned
  worker's answers just stop counting as votes.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.calibration.settings import CalibrationSettings
from backend.crowdwork.common import (
    close_crowd_tasks,
    golden_items,
    item_card,
    lease_to_crowd,
    pending_tasks,
    return_to_queue,
)
from backend.crowdwork.models import CrowdPool, CrowdTask
from backend.crowdwork.settings import CrowdSettings
from backend.errors import ValidationFailed
from backend.items.models import Item
from backend.policy import Policy
from backend.queues.models import Queue, Task
from backend.queues.work import PAIR_ANSWERS as JUDGMENT_PAIR_ANSWERS
from crowd.config import CrowdConfig
from crowd.pairs import PAIR_ANSWERS, pair_key, pair_truth, split_pair_key

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # toloka-kit imports pkg_resources
    from crowd.push import PushPlan

#: The crowd's answer (yes / no) → the judgment's label (same / different), as a
#: moderator answers a pair task.
CROWD_TO_JUDGMENT = dict(zip(PAIR_ANSWERS, JUDGMENT_PAIR_ANSWERS, strict=True))
PROJECT_KEY = "quorum-pairs"


@dataclass
class PairOutcomes:
    decided: int = 0
    ties: int = 0
    returned: int = 0


def pair_pool_config(*, crowd: CrowdSettings, cal: CalibrationSettings) -> CrowdConfig:
    """The crowd settings with the pair overlap as start and minimum, plain majority vote
    and no training pool."""
    return crowd.crowd_config(aggregation="mv", overlap=cal.pair_overlap,
                              min_answers=cal.pair_overlap,
                              max_overlap=max(crowd.max_overlap, cal.pair_overlap),
                              training=False)


def golden_pairs(session: Session, *, labels: list[str], exclude: set[int],
                 n: int) -> list[tuple[int, int, str]]:
    """Up to ``n`` control pairs ``(a, b, "yes" | "no")`` of golden items (oldest first,
    each used once, none of ``exclude``), alternately same and different label where the
    golden items allow."""
    left = [(it.id, str(it.golden_label))
            for it in golden_items(session, labels=labels, exclude=exclude, n=4 * n)]
    out: list[tuple[int, int, str]] = []
    want_same = True
    while len(out) < n and len(left) >= 2:
        a, label_a = left.pop(0)
        j = next((k for k, (_, lab) in enumerate(left) if (lab == label_a) == want_same), 0)
        b, label_b = left.pop(j)
        out.append((a, b, str(pair_truth(label_a, label_b))))
        want_same = not want_same
    return out


def create_pair_pool_intent(*, session: Session, queue: Queue, crowd: CrowdSettings,
                            cal: CalibrationSettings, policy: Policy, now: datetime,
                            limit: int | None = None) -> CrowdPool | None:
    """Record a pair pool for ``queue``'s pending pair tasks and lease them to the crowd
    (None when nothing is pending)."""
    cfg = pair_pool_config(crowd=crowd, cal=cal)
    cap = limit if limit is not None else (crowd.max_items_per_pool or None)
    tasks = pending_tasks(session, queue_id=queue.id, task_type="pair", limit=cap)
    if not tasks:
        return None
    others = sorted({_other(t) for t in tasks})
    known = {i for start in range(0, len(others), 500) for i in session.scalars(
        select(Item.id).where(Item.id.in_(others[start:start + 500])))}
    tasks = [t for t in tasks if _other(t) in known]  # a pair whose other item is gone
    if not tasks:
        return None
    want = min(max(math.ceil(crowd.golden_rate * len(tasks)), crowd.golden_min),
               crowd.golden_max)
    anchors = {t.item_id for t in tasks}
    control = golden_pairs(session, labels=policy.class_keys, exclude=anchors,
                           n=want) if cfg.golden_per_suite else []
    if cfg.golden_per_suite and not control:
        raise ValidationFailed("no control pairs for a pair pool: it needs two golden items "
                               "with a policy label (is_golden + golden_label) that are not "
                               "anchors of its pairs; ingest some or set "
                               "QUORUM_CROWD_GOLDEN_PER_SUITE=0")
    pool = CrowdPool(queue_id=queue.id, kind="pair", state="intent", aggregation_method="mv",
                     config={"crowd": asdict(cfg)}, task_count=len(tasks), answers_count=0,
                     spend=0.0, created_at=now, updated_at=now)
    session.add(pool)
    session.flush()
    pool.config = {**pool.config, "key": f"quorum-pool-{pool.id}", "queue": queue.name,
                   "banned": [], "golden_pairs": [list(p) for p in control]}
    session.add_all(
        [CrowdTask(pool_id=pool.id, item_id=t.item_id, task_id=t.id, is_golden=False,
                   overlap=cfg.overlap, created_at=now) for t in tasks]
        + [CrowdTask(pool_id=pool.id, item_id=a, task_id=None, is_golden=True, overlap=0,
                     created_at=now) for a, _, _ in control])
    lease_to_crowd(session, task_ids=[t.id for t in tasks], now=now)
    session.flush()
    return pool


def _other(task: Task) -> int:
    return int((task.payload or {}).get("other_item_id", -1))


def _card(item: Item | None, at: datetime) -> dict[str, Any]:
    if item is None:
        return {}
    return {k: v for k, v in item_card(item, signed_at=at).items()
            if k != "item_id" and v is not None}


def build_pair_plan(*, session: Session, pool: CrowdPool, policy: Policy) -> PushPlan:
    """The `PushPlan` (kind ``pair``) of a recorded pair pool (the same on every retry)."""
    rows = session.execute(
        select(CrowdTask.item_id, Task.payload).join(Task, Task.id == CrowdTask.task_id)
        .where(CrowdTask.pool_id == pool.id, CrowdTask.is_golden.is_(False))
        .order_by(CrowdTask.id)).all()
    real = [(int(a), int((payload or {})["other_item_id"])) for a, payload in rows]
    control = [(int(a), int(b), str(ans)) for a, b, ans in pool.config.get("golden_pairs", [])]
    ids = sorted({i for a, b in real for i in (a, b)} | {i for a, b, _ in control for i in (a, b)})
    items = {it.id: it for start in range(0, len(ids), 500) for it in session.scalars(
        select(Item).where(Item.id.in_(ids[start:start + 500])))}
    cols = ["item_id", "item_a", "item_b"]
    at = pool.created_at
    real_rows = [{"item_id": pair_key(a, b), "item_a": _card(items.get(a), at),
                  "item_b": _card(items.get(b), at)} for a, b in real]
    gold_rows = [{"item_id": pair_key(a, b), "item_a": _card(items.get(a), at),
                  "item_b": _card(items.get(b), at), "label": ans} for a, b, ans in control]
    return PushPlan(
        key=pool.config["key"],
        policy=[{"key": lab.key, "title": lab.title} for lab in policy.labels],
        items=pd.DataFrame(real_rows, columns=cols),
        golden=pd.DataFrame(gold_rows, columns=[*cols, "label"]) if gold_rows else None,
        config=CrowdConfig.from_mapping(pool.config["crowd"]),
        kind="pair",
        project_key=PROJECT_KEY,
    )


def anchor_of(key: str) -> int:
    """The anchor item id of a pair key."""
    halves = split_pair_key(key)
    if halves is None:
        raise ValidationFailed(f"{key!r} is not a pair key")
    return int(halves[0])


def pair_answers(answers: pd.DataFrame) -> pd.DataFrame:
    """crowd's answers frame of a pair pool in our terms: ``task`` = the anchor item id,
    ``label`` / ``golden_label`` = ``same`` / ``different``."""
    if answers.empty:
        return answers
    return answers.assign(task=[str(anchor_of(k)) for k in answers["task"]],
                          label=answers["label"].map(_judged),
                          golden_label=answers["golden_label"].map(_judged))


def _judged(value: Any) -> Any:
    return CROWD_TO_JUDGMENT.get(value, value) if isinstance(value, str) else value


def resolve_pairs(session: Session, *, pool: CrowdPool, open_real: set[int],
                  verdicts: pd.DataFrame, exhausted: bool, max_overlap: int,
                  now: datetime) -> PairOutcomes:
    """Close the pairs that have their answers: ``decided`` (a strict majority), ``tie``
    (none at the maximum overlap, or when the crowd stopped), ``unanswered`` (no usable
    answer when the crowd stopped: the task goes back to its queue). No decision events."""
    by_item = verdicts.assign(item=verdicts["task"].astype(int)).set_index("item")
    outcome: dict[int, str] = {}
    for item_id in sorted(open_real):
        if item_id not in by_item.index:
            if exhausted:
                outcome[item_id] = "unanswered"
            continue
        v = by_item.loc[item_id]
        if v["status"] == "decided":
            outcome[item_id] = "decided"
        elif int(v["n_answers"]) >= max_overlap or exhausted:
            outcome[item_id] = "tie" if pd.isna(v["label"]) else "decided"
    returned = close_crowd_tasks(
        session, pool_id=pool.id, outcome=outcome, now=now, reopen={"unanswered"},
        n_answers={int(i): int(n) for i, n in by_item["n_answers"].items()})
    states = list(outcome.values())
    result = PairOutcomes(decided=states.count("decided"), ties=states.count("tie"),
                          returned=states.count("unanswered"))
    return_to_queue(session, task_ids=returned)
    session.flush()
    return result
