"""Crowd bookkeeping: push a crowd queue to Toloka, pull answers into judgments, decide.

Two jobs, each taking ids and owning its transactions (like every background job):

* `push_queue` — records the intent (a ``CrowdPool`` row in state ``intent``, one
  ``CrowdTask`` per item, the queue's tasks leased to the crowd) and **commits**; then
  `crowd.push` creates the project, pool and tasks on Toloka, recording what it created
  before and after each call in `DbStore`; then the Toloka ids are recorded and the pool
  is ``open``. A re-run after a crash resumes the unfinished pool of that queue (same key,
  same items): crowd's reconciliation finds what exists, nothing is created twice.
* `pull_pool` — one round: incremental `crowd.pull` from the stored cursor, each answer
  a ``Judgment`` (idempotent on ``(assignment_id, item_id)``), `crowd.review`
  (accept/reject by golden accuracy and speed, bans), `crowd.aggregate` with the pool's
  method; ``decided`` items get a crowd decision event and their queue task done; items
  still unsure get more answers (`crowd.next_round` → ``patch_task_overlap_or_min``) up
  to ``max_overlap``, past which — or when the crowd stops answering — they go to the
  moderator queue ``CROWD_DISAGREE``. Never a coin flip; control tasks never decide.

The pair queue (``QUORUM_CALIBRATION_PAIR_QUEUE_KIND``) makes a *pair pool* instead
(`backend.crowdwork.pairs`): the same push, pull and review, crowd's pair task spec,
answers recorded as ``same`` / ``different`` judgments on the pair tasks for the
similarity calibration, and no decision events.

Remote calls happen only between transactions (never inside one), after the commit that
records the intent, and they are safe to repeat.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import delete, distinct, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from backend.calibration.settings import CalibrationSettings, get_calibration_settings
from backend.crowdwork import gold, pairs
from backend.crowdwork.common import (
    close_crowd_tasks,
    emulator_id_base,
    golden_items,
    item_card,
    lease_to_crowd,
    pending_tasks,
)
from backend.crowdwork.models import CrowdPool, CrowdStoreEntry, CrowdTask, Judgment
from backend.crowdwork.settings import CrowdSettings
from backend.crowdwork.store import DbStore
from backend.db import utcnow
from backend.decisions.service import NewDecision, record_decisions
from backend.errors import Conflict, NotFound, ValidationFailed
from backend.items.models import Item
from backend.items.service import newest_scores
from backend.policy import Policy
from backend.queues import service as queues
from backend.queues.models import Queue, Task
from backend.settings import Settings
from crowd.config import CrowdConfig
from crowd.store import Store

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # toloka-kit imports pkg_resources
    import toloka.client as tc

    from crowd.aggregation import METHODS
    from crowd.pull import ANSWER_COLUMNS
    from crowd.push import PushPlan, push
    from crowd.rounds import Outcome, RoundState, play_round, scores_frame
    from crowd.toloka import labels_for, output_field

OPEN_STATES = ("intent", "open")
#: Answers from earlier label pools (the most recent) each label pool's aggregate reads
#: too, so that what was learnt about a worker carries over from pool to pool.
SKILL_HISTORY = 100_000


@dataclass
class CrowdRuntime:
    """What a crowd job needs: a Toloka client, sessions, settings and the policy."""

    client: tc.TolokaClient
    sessions: sessionmaker[Session]
    settings: Settings
    crowd: CrowdSettings
    policy: Policy
    store: Store | None = None
    #: Pair pools: the pair queue kind, its audience and overlap (``QUORUM_CALIBRATION_*``).
    cal: CalibrationSettings | None = None
    #: Where ``client`` points, and whether that is a local emulator living only for this
    #: run (recorded on each pool pushed, so that a later run can tell it is gone).
    toloka_url: str | None = None
    local_emulator: bool = False

    def __post_init__(self) -> None:
        if self.store is None:
            self.store = DbStore(self.sessions)
        if self.cal is None:
            self.cal = get_calibration_settings()


@dataclass
class PushSummary:
    pool_id: int
    toloka_pool_id: str | None
    queue: str
    items: int  # real tasks: items (label pools) or pairs (pair pools)
    golden: int
    created: int
    reused: int
    resumed: bool = False
    already_open: bool = False
    left_pending: int = 0
    kind: str = "item"
    #: Stale pools of the queue expired first (their tasks pushed again here).
    expired: list[int] = field(default_factory=list)


@dataclass
class PullSummary:
    pool_id: int
    state: str
    kind: str = "item"
    new_answers: int = 0
    judgments_added: int = 0
    rejected: int = 0
    banned: list[str] = field(default_factory=list)
    decided: int = 0
    to_moderators: int = 0
    asked_more: int = 0
    unresolved: int = 0
    #: Pair pools: pairs without a majority at the maximum overlap (done, counted as not
    #: same), and pairs nobody answered (back to their queue).
    ties: int = 0
    returned: int = 0


def pool_config(pool: CrowdPool) -> CrowdConfig:
    return CrowdConfig.from_mapping(pool.config["crowd"])


def get_pool(*, session: Session, pool_id: int) -> CrowdPool:
    pool = session.get(CrowdPool, pool_id)
    if pool is None:
        raise NotFound(f"no crowd pool with id {pool_id}")
    return pool


# ---------------------------------------------------------------- push
def create_pool_intent(*, session: Session, queue: Queue, crowd: CrowdSettings, policy: Policy,
                       now: datetime, method: str | None = None,
                       limit: int | None = None) -> CrowdPool | None:
    """Record a new pool for ``queue``'s pending tasks and lease them to the crowd.

    Returns None when the queue has no pending task. Golden items of the queue become
    control tasks; more control tasks come from golden items with known labels.
    """
    method = method or crowd.aggregation
    if method not in METHODS:
        raise ValidationFailed(f"unknown aggregation method {method!r}; choose from {METHODS}")
    cfg = crowd.crowd_config(aggregation=method)
    cap = limit if limit is not None else (crowd.max_items_per_pool or None)
    budget = None
    if crowd.daily_budget > 0:
        budget = budget_cap(session=session, crowd=crowd, config=cfg, now=now)
        cap = budget["items"] if cap is None else min(cap, budget["items"])
    if cap is None:
        tasks = pending_tasks(session, queue_id=queue.id, task_type="item", limit=None)
    else:
        # a cut queue: the tasks whose decision is likeliest to flip first
        tasks = by_expected_value(session, pending_tasks(
            session, queue_id=queue.id, task_type="item", limit=None),
            priority=queue.priority)[:cap]
    if not tasks:
        if budget is not None and budget["items"] == 0 and pending_tasks(
                session, queue_id=queue.id, task_type="item", limit=1):
            raise BudgetSpent(
                f"the crowd's daily budget (QUORUM_CROWD_DAILY_BUDGET=${crowd.daily_budget:g}) "
                f"is committed: ${budget['committed']:.2f} today, ${budget['per_item']:.4f} "
                f"expected per item; {queue.name}'s tasks stay pending until tomorrow or a "
                "larger budget")
        return None
    labels = labels_for(policy=[{"key": k} for k in policy.keys])
    items = {it.id: it for it in session.scalars(
        select(Item).where(Item.id.in_([t.item_id for t in tasks])))}
    control = {t.item_id for t in tasks
               if items[t.item_id].is_golden and items[t.item_id].golden_label in labels}
    n_real = len(tasks) - len(control)
    if n_real == 0:
        raise ValidationFailed(f"queue {queue.name} holds only golden items; they are mixed "
                               "into other queues' pools as control tasks")
    # golden_per_worker: that many control tasks (a worker answers each once at most, so
    # control answers stop after their first few suites), else a share of the items
    want = (cfg.golden_per_worker if cfg.golden_per_worker else
            min(max(math.ceil(crowd.golden_rate * n_real), crowd.golden_min), crowd.golden_max))
    # the golden set's life cycle: retire what was shown too often, top the set up from
    # verdicts two humans agree on, then take the least shown (rotation)
    refresh_golden_set(session=session, crowd=crowd, labels=labels, now=now)
    extra = gold.control_items(session, labels=labels, exclude=set(items),
                               n=max(want - len(control), 0), cap=crowd.golden_max_exposures)
    if cfg.golden_per_suite and not control and not extra:
        raise ValidationFailed("no golden items with a known label to use as control tasks; "
                               "ingest some (is_golden + golden_label) or set "
                               "QUORUM_CROWD_GOLDEN_PER_SUITE=0")
    config: dict[str, Any] = {"crowd": asdict(cfg)}
    if budget is not None:
        config["budget"] = {**budget, "estimated_cost": round(
            budget["per_item"] * n_real, 4)}
    pool = CrowdPool(queue_id=queue.id, kind="item", state="intent", aggregation_method=method,
                     config=config, task_count=n_real, answers_count=0,
                     spend=0.0, created_at=now, updated_at=now)
    session.add(pool)
    session.flush()
    pool.config = {**pool.config, "key": f"quorum-pool-{pool.id}", "queue": queue.name,
                   "banned": []}
    session.add_all(
        [CrowdTask(pool_id=pool.id, item_id=t.item_id, task_id=t.id,
                   is_golden=t.item_id in control, overlap=cfg.overlap, created_at=now)
         for t in tasks]
        + [CrowdTask(pool_id=pool.id, item_id=it.id, task_id=None, is_golden=True,
                     overlap=0, created_at=now) for it in extra])
    lease_to_crowd(session, task_ids=[t.id for t in tasks], now=now)
    session.flush()
    return pool


class BudgetSpent(Conflict):
    """The day's crowd budget is committed: nothing more is pushed today."""


def expected_cost_per_item(*, session: Session, config: CrowdConfig) -> float:
    """Dollars one item is expected to cost: the paid answers per item of the closed label
    pools so far (control answers included), else the start overlap with the control
    tasks' share, at ``reward_per_task``."""
    answers, items = session.execute(
        select(func.sum(CrowdPool.answers_count), func.sum(CrowdPool.task_count))
        .where(CrowdPool.kind == "item", CrowdPool.state == "closed")).one()
    if items:
        per_item = float(answers or 0) / float(items)
    else:
        per_item = (max(config.overlap, config.min_answers)
                    * (config.tasks_per_suite + config.golden_per_suite) / config.tasks_per_suite)
    return round(max(per_item, 1.0) * config.reward_per_task, 6)


def budget_cap(*, session: Session, crowd: CrowdSettings, config: CrowdConfig,
               now: datetime) -> dict[str, Any]:
    """How many items the day's crowd budget still pays for: ``daily_budget`` less what the
    pools created today (UTC) are committed to — each its spend, or its estimate while it
    is not closed, whichever is more — over `expected_cost_per_item`."""
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    committed = 0.0
    for pool in session.scalars(select(CrowdPool).where(CrowdPool.created_at >= start)):
        estimate = float((pool.config.get("budget") or {}).get("estimated_cost", 0.0))
        committed += pool.spend if pool.state in ("closed", "expired") else max(
            pool.spend, estimate)
    per_item = expected_cost_per_item(session=session, config=config)
    left = max(crowd.daily_budget - committed, 0.0)
    return {"daily_budget": crowd.daily_budget, "committed": round(committed, 4),
            "per_item": per_item, "items": int(left // per_item) if per_item > 0 else 0}


def by_expected_value(session: Session, tasks: list[Task], *, priority: float) -> list[Task]:
    """``tasks`` by expected value, highest first: how likely the item's decision flips
    (1 − the classifier's top probability; 0.5 for an item it never scored) × the queue's
    priority; oldest first among equals."""
    scores = newest_scores(session=session, item_ids=[t.item_id for t in tasks])
    value = {t.id: (1.0 - queues.top_probability(scores.get(t.item_id))) * priority
             for t in tasks}
    return sorted(tasks, key=lambda t: (-value[t.id], t.id))


def refresh_golden_set(*, session: Session, crowd: CrowdSettings, labels: Collection[str],
                       now: datetime) -> tuple[list[int], list[gold.Candidate]]:
    """Retire the golden items past ``golden_max_exposures``, then promote items whose
    verdict two humans agree on until ``golden_target`` items are active (`gold`);
    returns (retired, promoted)."""
    retired = gold.retire_overexposed(session, cap=crowd.golden_max_exposures, now=now)
    promoted: list[gold.Candidate] = []
    if crowd.golden_target > 0:
        have = sum(gold.active_count(session, labels=list(labels)).values())
        promoted = gold.replenish(session, labels=list(labels), n=crowd.golden_target - have,
                                  now=now, min_crowd_answers=crowd.golden_crowd_min_answers,
                                  crowd_agreement=crowd.golden_crowd_agreement)
    return retired, promoted


def build_plan(*, session: Session, pool: CrowdPool, policy: Policy) -> PushPlan:
    """The `PushPlan` of a recorded pool (the same on every retry)."""
    rows = session.execute(
        select(CrowdTask.is_golden, Item).join(Item, Item.id == CrowdTask.item_id)
        .where(CrowdTask.pool_id == pool.id).order_by(CrowdTask.id)).all()
    at = pool.created_at
    real = [item_card(item, signed_at=at) for golden, item in rows if not golden]
    gold = [{**item_card(item, signed_at=at), "label": item.golden_label}
            for golden, item in rows if golden]
    cols = ["item_id", "title", "description", "image", "price", "link"]
    config = pool_config(pool)
    training = None
    if config.training:
        # the training pool: golden items not used as this pool's control tasks (oldest
        # first, so every retry builds the same plan), a few suites' worth
        labels = labels_for(policy=[{"key": k} for k in policy.keys])
        train_items = golden_items(session, labels=labels,
                                   exclude={item.id for _, item in rows},
                                   n=4 * config.training_tasks_per_suite)
        if not train_items:
            raise ValidationFailed("a training pool needs golden items (is_golden + "
                                   "golden_label) beyond this pool's control tasks")
        training = pd.DataFrame([{**item_card(it, signed_at=at), "label": it.golden_label}
                                 for it in train_items],
                                columns=[*cols, "label"])
    return PushPlan(
        key=pool.config["key"],
        policy=[{"key": lab.key, "title": lab.title} for lab in policy.labels],
        items=pd.DataFrame(real, columns=cols),
        golden=pd.DataFrame(gold, columns=[*cols, "label"]) if gold else None,
        training=training,
        config=config,
        project_key="quorum-items",
    )


def queue_pool_kind(*, session: Session, queue: Queue, settings: Settings,
                    cal: CalibrationSettings) -> str:
    """What pool ``queue`` makes: ``pair`` for the pair queue kind (pair tasks only; its
    audience follows ``QUORUM_CALIBRATION_PAIR_AUDIENCE``), ``item`` for a crowd queue of
    item tasks; anything else is refused with the reason."""
    types = set(session.scalars(select(distinct(Task.task_type)).where(
        Task.queue_id == queue.id)))
    if queue.kind == cal.pair_queue_kind:
        if types - {"pair"}:
            raise ValidationFailed(
                f"queue {queue.name} is the pair queue ({cal.pair_queue_kind}) but holds "
                f"{', '.join(sorted(types - {'pair'}))} tasks; a pair pool takes pair tasks only")
        if queue.audience != "crowd":
            if cal.pair_audience != "crowd":
                raise ValidationFailed(
                    f"queue {queue.name} is worked by moderators "
                    "(QUORUM_CALIBRATION_PAIR_AUDIENCE=moderators); set it to crowd to push "
                    "pair tasks to the crowd")
            queue.audience = "crowd"  # queued while the pairs were the moderators'
        return "pair"
    if types - {"item"}:
        raise ValidationFailed(
            f"queue {queue.name} holds {', '.join(sorted(types - {'item'}))} tasks: a crowd "
            f"pool is made of item tasks (a label pool) or of the {cal.pair_queue_kind} "
            "queue's pair tasks (a pair pool)")
    if queue.audience != "crowd":
        raise ValidationFailed(f"queue {queue.name} is worked by moderators, not the crowd "
                               f"(crowd kinds: {', '.join(settings.crowd_queue_kinds)}; pair "
                               f"tasks: the {cal.pair_queue_kind} queue)")
    return "item"


def push_queue(*, rt: CrowdRuntime, queue_name: str, now: datetime | None = None,
               method: str | None = None, limit: int | None = None) -> PushSummary:
    """Push ``queue_name``'s pending tasks to the crowd as one pool (resumes a crashed push):
    a label pool for a crowd queue of items, a pair pool for the pair queue."""
    from backend.crowdwork.expiry import expire_stale_pools

    now = now or utcnow()
    assert rt.cal is not None and rt.store is not None
    with rt.sessions() as session:
        queue_id = queues.get_queue(session=session, name=queue_name).id
    # a pool of this queue whose Toloka is gone (or past its deadline) gives its tasks back
    expired = expire_stale_pools(rt=rt, now=now, queue_id=queue_id)
    with rt.sessions.begin() as session:
        queue = queues.get_queue(session=session, name=queue_name)
        kind = queue_pool_kind(session=session, queue=queue, settings=rt.settings, cal=rt.cal)
        if kind == "pair" and method not in (None, "mv"):
            raise ValidationFailed("pair pools are aggregated by majority vote (mv), as the "
                                   f"similarity calibration reads them, not {method!r}")
        pool = session.scalar(select(CrowdPool).where(CrowdPool.queue_id == queue.id,
                                                      CrowdPool.state == "intent")
                              .order_by(CrowdPool.id).limit(1))
        resumed = pool is not None
        if pool is None and kind == "pair":
            pool = pairs.create_pair_pool_intent(session=session, queue=queue, crowd=rt.crowd,
                                                 cal=rt.cal, policy=rt.policy, now=now,
                                                 limit=limit)
        elif pool is None:
            pool = create_pool_intent(session=session, queue=queue, crowd=rt.crowd,
                                      policy=rt.policy, now=now, method=method, limit=limit)
        if pool is None:
            last = session.scalar(select(CrowdPool).where(CrowdPool.queue_id == queue.id)
                                  .order_by(CrowdPool.id.desc()).limit(1))
            if last is None:
                raise ValidationFailed(f"queue {queue.name} has no pending tasks to push")
            return PushSummary(pool_id=last.id, toloka_pool_id=last.toloka_pool_id,
                               queue=queue.name, items=last.task_count, golden=0, created=0,
                               reused=0, already_open=True, kind=last.kind)
        kind = pool.kind
        plan = (pairs.build_pair_plan(session=session, pool=pool, policy=rt.policy)
                if kind == "pair" else build_plan(session=session, pool=pool, policy=rt.policy))
        pool_id = pool.id
        left_pending = session.scalar(select(func.count()).select_from(Task).where(
            Task.queue_id == queue.id, Task.state == "pending")) or 0
    # the intent is committed: now the side effects on Toloka (resumable, see crowd.push)
    result = push(rt.client, plan=plan, store=rt.store)
    with rt.sessions.begin() as session:
        taken = session.scalar(select(CrowdPool.id).where(
            CrowdPool.toloka_pool_id == result.pool_id, CrowdPool.id != pool_id))
        if taken is not None:
            # another Toloka than the one that id was recorded from (a restarted standalone
            # emulator): forget what this push recorded of it, so a retry starts clean
            for key in (f"pool:{plan.key}", f"training:{plan.key}", plan.project_store_key):
                session.execute(delete(CrowdStoreEntry).where(CrowdStoreEntry.key == key))
            base = emulator_id_base(session=session)
    if taken is not None:
        raise Conflict(
            f"{rt.toloka_url or 'this Toloka'} answered pool id {result.pool_id} for crowd pool "
            f"{pool_id}, but crowd pool {taken} already records that id: it is not the Toloka "
            "Quorum pushed to before (a restarted emulator?). Start the emulator with "
            f"--id-base {base} and push again, or give the tasks back with "
            f"'quorum crowd expire --pool {pool_id}'")
    to_item = pairs.anchor_of if kind == "pair" else int
    toloka_tasks = {to_item(key): task_id for key, task_id in result.task_ids.items()}
    with rt.sessions.begin() as session:
        pool = get_pool(session=session, pool_id=pool_id)
        pool.toloka_project_id = result.project_id
        if rt.toloka_url:
            pool.config = {**pool.config, "toloka_url": rt.toloka_url,
                           "local_emulator": rt.local_emulator}
        pool.toloka_pool_id = result.pool_id
        pool.toloka_training_id = result.training_id
        pool.state = "open"
        pool.updated_at = utcnow()
        for ct in session.scalars(select(CrowdTask).where(CrowdTask.pool_id == pool_id)):
            ct.toloka_task_id = toloka_tasks.get(ct.item_id)
    n_gold = 0 if plan.golden is None else len(plan.golden)
    return PushSummary(pool_id=pool_id, toloka_pool_id=result.pool_id, queue=queue_name,
                       items=len(plan.items), golden=n_gold, created=result.created,
                       reused=result.reused, resumed=resumed, left_pending=left_pending,
                       kind=kind, expired=[e.pool_id for e in expired])


# ---------------------------------------------------------------- answers
def answers_frame(*, session: Session, pool_ids: list[int] | None = None) -> pd.DataFrame:
    """Crowd judgments as crowd's answers frame (`crowd.pull.ANSWER_COLUMNS`) plus
    ``crowd_pool_id``; ``reward`` is the pool's pay per assignment."""
    stmt = (select(Judgment, CrowdPool.toloka_pool_id, CrowdPool.config)
            .join(CrowdPool, CrowdPool.id == Judgment.crowd_pool_id)
            .where(Judgment.worker_kind == "crowd").order_by(Judgment.id))
    if pool_ids is not None:
        stmt = stmt.where(Judgment.crowd_pool_id.in_(pool_ids))
    rows = []
    reward: dict[int, float] = {}
    for j, toloka_pool, config in session.execute(stmt):
        if j.crowd_pool_id not in reward:
            reward[j.crowd_pool_id] = CrowdConfig.from_mapping(config["crowd"]).reward_per_suite
        rows.append({
            "task": str(j.item_id), "worker": j.worker_id, "label": j.label,
            "assignment_id": j.assignment_id, "assignment_status": j.assignment_status,
            "time_spent_s": (j.time_spent_ms or 0) / 1000, "is_golden": j.is_golden,
            "golden_label": j.golden_label, "submitted_at": j.created_at,
            "pool_id": toloka_pool, "task_id": None, "reward": reward[j.crowd_pool_id],
            "crowd_pool_id": j.crowd_pool_id})
    return pd.DataFrame(rows, columns=[*ANSWER_COLUMNS, "crowd_pool_id"])


def record_answers(*, session: Session, pool: CrowdPool, answers: pd.DataFrame,
                   queue_tasks: dict[int, int | None], now: datetime) -> int:
    """Insert the answers as judgments, skipping ``(assignment_id, item_id)`` already there."""
    if answers.empty:
        return 0
    aids = sorted(set(answers["assignment_id"].astype(str)))
    seen: set[tuple[str, int]] = set()
    for start in range(0, len(aids), 500):
        seen.update(session.execute(
            select(Judgment.assignment_id, Judgment.item_id)
            .where(Judgment.assignment_id.in_(aids[start:start + 500]))).tuples().all())
    rows = []
    for a in answers.to_dict("records"):
        item_id = int(a["task"])
        if (str(a["assignment_id"]), item_id) in seen:
            continue
        seen.add((str(a["assignment_id"]), item_id))
        spent = a["time_spent_s"]
        rows.append({
            "item_id": item_id, "task_id": queue_tasks.get(item_id), "worker_kind": "crowd",
            "worker_id": str(a["worker"]), "label": str(a["label"]),
            "time_spent_ms": None if pd.isna(spent) else round(float(spent) * 1000),
            "is_golden": bool(a["is_golden"]),
            "golden_label": a["golden_label"] if a["is_golden"] else None,
            "crowd_pool_id": pool.id, "assignment_id": str(a["assignment_id"]),
            "assignment_status": str(a["assignment_status"]),
            "created_at": a["submitted_at"] if isinstance(a["submitted_at"], datetime) else now,
        })
    if rows:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        session.execute(insert(Judgment).on_conflict_do_nothing(
            index_elements=["assignment_id", "item_id"]), rows)
    session.flush()
    return len(rows)


# ---------------------------------------------------------------- pull
@dataclass
class _Snapshot:
    toloka_pool_id: str
    project_id: str
    cursor: str | None
    config: CrowdConfig
    method: str
    banned: list[str]
    queue_tasks: dict[int, int | None]  # item id -> queue task id
    toloka_tasks: dict[int, str | None]
    golden: dict[int, str]  # control item id -> known label (pairs: anchor -> same/different)
    open_real: set[int]
    kind: str = "item"
    context: pd.DataFrame | None = None  # earlier pools' answers (label pools)
    scores: pd.DataFrame | None = None  # the classifier's probabilities of the open items


def earlier_answers(*, session: Session, pool_id: int, limit: int = SKILL_HISTORY
                    ) -> pd.DataFrame:
    """Accepted or pending crowd answers of the other label pools, newest first (at most
    ``limit``): `crowd.rounds.decide`'s ``context``."""
    rows = session.execute(
        select(Judgment.item_id, Judgment.worker_id, Judgment.label, Judgment.is_golden,
               Judgment.golden_label)
        .join(CrowdPool, CrowdPool.id == Judgment.crowd_pool_id)
        .where(Judgment.worker_kind == "crowd", CrowdPool.kind == "item",
               CrowdPool.id != pool_id,
               or_(Judgment.assignment_status.is_(None),
                   Judgment.assignment_status != "REJECTED"))
        .order_by(Judgment.id.desc()).limit(limit)).all()
    return pd.DataFrame(
        [(str(i), str(w), str(lab), bool(g), gl) for i, w, lab, g, gl in rows],
        columns=["task", "worker", "label", "is_golden", "golden_label"])


def classifier_scores(*, session: Session, item_ids: Collection[int]) -> pd.DataFrame | None:
    """The classifier's probabilities (``item × label``) of ``item_ids`` that were scored:
    each item's newest ``ItemScore`` (`items.service.newest_scores`). `crowd.rounds.decide`'s
    ``scores``: the item's prior (``CrowdConfig.classifier``). None when none was scored."""
    newest = newest_scores(session=session, item_ids=item_ids)
    return scores_frame({str(k): v for k, v in newest.items()})


def _snapshot(session: Session, pool: CrowdPool) -> _Snapshot:
    cts = list(session.scalars(select(CrowdTask).where(CrowdTask.pool_id == pool.id)))
    gold_ids = [ct.item_id for ct in cts if ct.is_golden]
    if pool.kind == "pair":
        golden = {int(a): pairs.CROWD_TO_JUDGMENT[str(answer)]
                  for a, _, answer in pool.config.get("golden_pairs", [])}
    elif gold_ids:
        golden = dict(session.execute(select(Item.id, Item.golden_label)
                                      .where(Item.id.in_(gold_ids))).tuples().all())
    else:
        golden = {}
    open_real = {ct.item_id for ct in cts if not ct.is_golden and ct.outcome is None}
    cfg = pool_config(pool)
    return _Snapshot(
        kind=pool.kind,
        toloka_pool_id=str(pool.toloka_pool_id), project_id=str(pool.toloka_project_id),
        cursor=pool.last_assignment_id, config=cfg,
        method=pool.aggregation_method, banned=list(pool.config.get("banned", [])),
        queue_tasks={ct.item_id: ct.task_id for ct in cts},
        toloka_tasks={ct.item_id: ct.toloka_task_id for ct in cts},
        golden={k: v for k, v in golden.items() if v is not None},
        context=(None if pool.kind == "pair"
                 else earlier_answers(session=session, pool_id=pool.id)),
        scores=(classifier_scores(session=session, item_ids=open_real)
                if pool.kind == "item" and cfg.classifier != "off" else None),
        open_real=open_real)


def tempering(outcome: Outcome) -> dict[str, Any]:
    """What tempered the posterior behind a crowd decision (`CrowdConfig.temper_min_gold`),
    for its details: the temperature and the per-label bias, so the stated confidence is
    ``softmax(log p / temperature + class_bias)`` of the model's posterior. Empty when
    the posterior was not tempered."""
    if outcome.temperature == 1.0 and not outcome.class_bias:
        return {}
    return {"temperature": round(outcome.temperature, 4),
            "class_bias": {k: round(float(b), 4) for k, b in sorted(outcome.class_bias.items())}}


def _resolve(session: Session, *, pool: CrowdPool, snap: _Snapshot, outcome: Outcome,
             answers: dict[int, list[dict[str, Any]]], settings: Settings,
             crowd: CrowdSettings, now: datetime) -> tuple[int, int]:
    """Record the round's outcome (`crowd.rounds.decide`): decisions for the decided items,
    the ``CROWD_DISAGREE`` queue for those going to people; (decided, to_mods)."""
    decisions = [NewDecision(
        item_id=int(v["task"]), label=str(v["label"]), source="crowd",
        task_id=snap.queue_tasks.get(int(v["task"])), crowd_pool_id=pool.id,
        aggregation_method=snap.method, confidence=float(v["confidence"]),
        details={"answers": answers.get(int(v["task"]), []), "n_answers": int(v["n_answers"]),
                 "toloka_pool_id": snap.toloka_pool_id, "queue": pool.config.get("queue"),
                 **tempering(outcome)})
        for v in outcome.decided.to_dict("records")]
    to_mods = {int(k): why for k, why in outcome.to_people.items()}
    record_decisions(session=session, decisions=decisions, now=now)
    if to_mods:
        queues.enqueue(session=session, kind=crowd.disagree_kind, item_ids=sorted(to_mods),
                       now=now, settings=settings,
                       payloads=[{"crowd_pool_id": pool.id, "reason": to_mods[i],
                                  "answers": answers.get(i, [])} for i in sorted(to_mods)])
    result = {d.item_id: "decided" for d in decisions} | dict.fromkeys(to_mods, "moderators")
    verdicts = outcome.verdicts
    close_crowd_tasks(session, pool_id=pool.id, outcome=result, now=now,
                      n_answers=dict(zip(verdicts["task"].astype(int),
                                         verdicts["n_answers"].astype(int), strict=True)))
    session.flush()
    return len(decisions), len(to_mods)


class DbBook:
    """crowd's `RoundBook` on the database: each method is one committed transaction."""

    def __init__(self, *, rt: CrowdRuntime, pool_id: int, snap: _Snapshot,
                 now: datetime) -> None:
        self.rt, self.pool_id, self.snap, self.now = rt, pool_id, snap, now
        self.added = 0
        self.summary = PullSummary(pool_id=pool_id, state="open", kind=snap.kind)

    def record(self, answers: pd.DataFrame, cursor: str | None) -> pd.DataFrame:
        if self.snap.kind == "pair":
            answers = pairs.pair_answers(answers)
        with self.rt.sessions.begin() as session:
            pool = get_pool(session=session, pool_id=self.pool_id)
            self.added = record_answers(session=session, pool=pool, answers=answers,
                                        queue_tasks=self.snap.queue_tasks, now=self.now)
            if self.snap.kind == "item" and self.snap.golden:
                # a control task shown too often retires now (this pool keeps it: its
                # tasks are on Toloka already; the next pools do not take it)
                gold.retire_overexposed(session, cap=self.rt.crowd.golden_max_exposures,
                                        now=self.now, item_ids=list(self.snap.golden))
            if cursor is not None:
                pool.last_assignment_id = cursor
            return answers_frame(session=session, pool_ids=[self.pool_id])

    def resolve(self, *, outcome: Outcome, history: pd.DataFrame,
                statuses: Mapping[str, str], banned: Collection[str]) -> set[str]:
        snap, cfg, now, summary = self.snap, self.snap.config, self.now, self.summary
        with self.rt.sessions.begin() as session:
            pool = get_pool(session=session, pool_id=self.pool_id)
            for aid, verdict in statuses.items():
                session.execute(update(Judgment).where(Judgment.assignment_id == aid,
                                                       Judgment.crowd_pool_id == self.pool_id)
                                .values(assignment_status=verdict))
            paid = history[history["assignment_status"] != "REJECTED"]["assignment_id"]
            pool.spend = round(paid.nunique() * cfg.reward_per_suite, 4)
            pool.answers_count = len(history)
            pool.config = {**pool.config, "banned": sorted(banned),
                           "rounds": int(pool.config.get("rounds", 0)) + 1}
            if snap.kind == "pair":
                done = pairs.resolve_pairs(session, pool=pool, open_real=snap.open_real,
                                           verdicts=outcome.verdicts,
                                           exhausted=outcome.exhausted,
                                           max_overlap=cfg.max_overlap, now=now)
                summary.decided, summary.ties, summary.returned = (done.decided, done.ties,
                                                                   done.returned)
            else:
                valid = history[(history["assignment_status"] != "REJECTED")
                                & ~history["worker"].isin(list(banned))
                                & ~history["is_golden"].astype(bool)]
                answers = ({int(k): g[["worker", "label"]].to_dict("records")
                            for k, g in valid.groupby(valid["task"].astype(str))}
                           if len(valid) else {})
                summary.decided, summary.to_moderators = _resolve(
                    session, pool=pool, snap=snap, outcome=outcome, answers=answers,
                    settings=self.rt.settings, crowd=self.rt.crowd, now=now)
            open_real = session.scalars(select(CrowdTask.item_id).where(
                CrowdTask.pool_id == self.pool_id, CrowdTask.is_golden.is_(False),
                CrowdTask.outcome.is_(None))).all()
            summary.unresolved = len(open_real)
            if not open_real:
                _close(session, pool=pool, now=now)
            pool.updated_at = now
            summary.state = pool.state
        return {str(i) for i in open_real}


def pull_pool(*, rt: CrowdRuntime, pool_id: int, now: datetime | None = None) -> PullSummary:
    """One round of `crowd.rounds.play_round` (pull → review → aggregate → decide / ask for
    more / escalate) with the pool's book in the database; pair pools: judgments only, the
    answered pairs closed, no decisions."""
    now = now or utcnow()
    with rt.sessions.begin() as session:
        pool = get_pool(session=session, pool_id=pool_id)
        if pool.state == "intent":
            queue = pool.config.get("queue", "its queue")
            raise ValidationFailed(f"crowd pool {pool_id} was never fully pushed; run "
                                   f"'quorum crowd push {queue}' again to finish it")
        if pool.state != "open":
            return PullSummary(pool_id=pool_id, state=pool.state, kind=pool.kind)
        snap = _snapshot(session, pool)
    is_pair = snap.kind == "pair"
    gold = pd.Series({str(k): v for k, v in snap.golden.items()}, dtype=object)
    state = RoundState(
        pool_id=snap.toloka_pool_id, project_id=snap.project_id,
        field=output_field("pair" if is_pair else "label"), config=snap.config,
        method=snap.method,
        # pairs: a plain majority, as the calibration counts them (control pairs only review)
        gold=gold if len(gold) and not is_pair else None,
        open_items={str(i) for i in snap.open_real},
        toloka_tasks={str(k): v for k, v in snap.toloka_tasks.items()},
        cursor=snap.cursor, banned=set(snap.banned), context=snap.context,
        scores=snap.scores)
    book = DbBook(rt=rt, pool_id=pool_id, snap=snap, now=now)
    report = play_round(rt.client, state=state, book=book)
    summary = book.summary
    summary.new_answers, summary.judgments_added = report.new_answers, book.added
    summary.rejected, summary.banned = report.rejected, report.banned
    summary.asked_more = report.asked_more
    return summary


def _close(session: Session, *, pool: CrowdPool, now: datetime) -> None:
    """Every real item is resolved: control tasks from the pushed queue are done too."""
    for ct in session.scalars(select(CrowdTask).where(CrowdTask.pool_id == pool.id,
                                                      CrowdTask.is_golden.is_(True))):
        ct.outcome = "control"
        if ct.task_id is not None:
            task = session.get(Task, ct.task_id)
            if task is not None and task.state != "done":
                queues.complete(session=session, task=task, now=now)
    pool.state = "closed"


def open_pool_ids(*, session: Session) -> list[int]:
    return list(session.scalars(select(CrowdPool.id).where(CrowdPool.state == "open")
                                .order_by(CrowdPool.id)))
