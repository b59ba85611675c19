"""What the web pages show: today's queues, the work card and its context, a moderator's
stats, near-duplicate clusters. Keyword-only, typed, no ``Request``; domain errors only."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from backend.crowdwork.models import Judgment
from backend.errors import Forbidden, LeaseLost, NotFound, ValidationFailed
from backend.items.models import Item, ItemScore, ItemTag
from backend.queues import service as queues
from backend.queues.models import Queue, Task
from backend.rules.models import Rule, RuleHit
from backend.settings import Settings
from backend.users.models import User
from backend.web.clusters import Cluster, near_duplicate_clusters  # noqa: F401 (re-exported)

IMAGE_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                  ".gif": "image/gif", ".webp": "image/webp"}


# --- queues -------------------------------------------------------------------------------

def today_queues(*, session: Session, user: User, settings: Settings,
                 now: datetime) -> list[queues.QueueRow]:
    """Today's queues this user may work (analysts and admins see every queue)."""
    day = queues.queue_day(now, settings)
    return queues.list_queues(session=session, day=day, kinds=queues.visible_kinds(user))


def workable_queue(*, session: Session, user: User, name: str) -> Queue:
    """The queue ``name`` if this user may work it; ``Forbidden`` otherwise."""
    queue = queues.get_queue(session=session, name=name)
    if not user.may_work(queue.kind):
        raise Forbidden(f"you may not work the queue {queue.name}")
    return queue


def held_task(*, session: Session, task_id: int, user: User, now: datetime) -> Task:
    """The task ``task_id`` if ``user`` holds its lease (the work view shows only those)."""
    task = session.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task with id {task_id}")
    if not user.may_work(task.queue.kind):
        raise Forbidden(f"you may not work the queue {task.queue.name}")
    queues.check_lease(task=task, user=user, now=now)
    if task.task_type != "item":
        raise ValidationFailed(f"task {task.id} is a {task.task_type} task: the work view "
                               "shows item cards; answer it through the API")
    return task


# --- the work card ------------------------------------------------------------------------

@dataclass
class RuleHitView:
    name: str
    mode: str
    action: str
    outcome: str | None


@dataclass
class NearestVerdict:
    """A decided item close to this one (filled by the ML integration)."""

    item_id: int
    label: str
    distance: float
    title: str = ""
    has_image: bool = False
    decided_by: str = "–"
    decided_at: datetime | None = None

    @property
    def distance_text(self) -> str:
        from backend.web.history import format_distance

        return format_distance(self.distance)


@dataclass
class WorkCard:
    task: Task
    item: Item
    rule_hits: list[RuleHitView] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    score_model: str | None = None
    score_band: str | None = None
    nearest: list[NearestVerdict] = field(default_factory=list)
    #: ML is on but the item has no stored vector: no neighbours (never encoded in a request)
    no_vector: bool = False
    #: an APPEALS task: the appeal and the decision appealed against
    appeal: Any = None
    appealed: Any = None

    @property
    def crowd_votes(self) -> list[tuple[str, int]] | None:
        """A task the crowd could not settle (``CROWD_DISAGREE``): its votes, label →
        count, most first (None for other tasks)."""
        payload = self.task.payload or {}
        if "crowd_pool_id" not in payload:
            return None
        counts: dict[str, int] = {}
        for answer in payload.get("answers") or []:
            label = str(answer.get("label"))
            counts[label] = counts.get(label, 0) + 1
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))

    @property
    def crowd_reason(self) -> str | None:
        return (self.task.payload or {}).get("reason")

    @property
    def neighbours_disagree(self) -> bool:
        """The nearest past verdicts do not all carry the same label."""
        return len({n.label for n in self.nearest}) > 1

    @property
    def image_is_local(self) -> bool:
        img = self.item.image or ""
        return bool(img) and not img.startswith(("http://", "https://"))


def nearest_verdicts(session: Session, item_id: int) -> list[NearestVerdict] | None:
    """Items with human verdicts nearest to ``item_id`` (thumbnail, label, distance), from
    the similarity index (``backend.ml_adapter``); empty when ML is switched off. Never
    runs the encoder inside the request: None when the item has no stored vector yet
    (the card says to run ``quorum embed``)."""
    from backend.ml_adapter.service import stored_neighbours_for_item
    from backend.ml_adapter.settings import get_ml_settings
    from backend.web.history import decided_by

    if not get_ml_settings().enabled:
        return []
    found = stored_neighbours_for_item(session=session, item_id=item_id, k=5)
    if found is None:
        return None
    who = decided_by(session=session, item_ids=[n["item_id"] for n in found])
    return [NearestVerdict(item_id=n["item_id"], label=n["label"], distance=n["distance"],
                           title=n["title"] or "", has_image=bool(n["image"]),
                           decided_by=who.get(n["item_id"], ("–", None))[0],
                           decided_at=who.get(n["item_id"], ("–", None))[1])
            for n in found]


def work_card(*, session: Session, task: Task) -> WorkCard:
    item = session.get(Item, task.item_id)
    if item is None:
        raise NotFound(f"no item with id {task.item_id}")
    hits = [RuleHitView(name=r.name, mode=h_mode, action=r.action,
                        outcome=r.label or r.queue_kind or r.tag)
            for r, h_mode in session.execute(
                select(Rule, RuleHit.mode).join(RuleHit, RuleHit.rule_id == Rule.id)
                .where(RuleHit.item_id == item.id).order_by(RuleHit.id)).all()]
    tags = list(session.scalars(select(ItemTag.tag).where(ItemTag.item_id == item.id)
                                .order_by(ItemTag.tag)))
    score = session.scalar(select(ItemScore).where(ItemScore.item_id == item.id)
                           .order_by(ItemScore.created_at.desc(), ItemScore.id.desc()).limit(1))
    nearest = nearest_verdicts(session, item.id)
    card = WorkCard(task=task, item=item, rule_hits=hits, tags=tags, nearest=nearest or [],
                    no_vector=nearest is None)
    if task.payload and "appeal_id" in task.payload:
        from backend.appeals.models import Appeal
        from backend.decisions.models import DecisionEvent

        card.appeal = session.get(Appeal, int(task.payload["appeal_id"]))
        if card.appeal is not None:
            card.appealed = session.get(DecisionEvent, card.appeal.event_id)
    if score is not None:
        card.scores = dict(sorted(score.scores.items(), key=lambda kv: -kv[1]))
        card.score_model, card.score_band = score.model_id, score.band
    return card


def local_image(*, item: Item, settings: Settings) -> tuple[Path, str]:
    """The item's image file if it is a local image under the data dir; ``NotFound`` else."""
    raw = item.image or ""
    if not raw or raw.startswith(("http://", "https://")) or "\x00" in raw:
        raise NotFound("this item has no local image")
    root = settings.data_dir.resolve()
    path = Path(raw)
    if not path.is_absolute():
        path = root / path
    path = path.resolve()
    media = IMAGE_SUFFIXES.get(path.suffix.lower())
    if media is None or not path.is_relative_to(root) or not path.is_file():
        raise NotFound("this item has no local image")
    return path, media


# --- cluster review (grouping in backend.web.clusters) ---------------------------------------

def lease_tasks(*, session: Session, task_ids: Sequence[int], queue: Queue, user: User,
                now: datetime, settings: Settings) -> list[Task]:
    """Lease the given pending tasks of ``queue`` for ``user`` (all or nothing)."""
    if not user.may_work(queue.kind) or queue.audience != "moderators":
        raise Forbidden(f"you may not work the queue {queue.name}")
    queues.expire_leases(session=session, now=now)
    ids = sorted(set(task_ids))
    result = session.execute(
        update(Task).where(Task.id.in_(ids), Task.queue_id == queue.id, Task.state == "pending")
        .values(state="leased", lease_owner_id=user.id, leased_at=now,
                lease_expires_at=now + timedelta(seconds=settings.lease_seconds),
                lease_count=Task.lease_count + 1)
        .execution_options(synchronize_session=False))
    if result.rowcount != len(ids):
        raise LeaseLost("some of the selected tasks were taken by someone else; reload the grid")
    return [t for t in (session.get(Task, i, populate_existing=True) for i in ids) if t]


# --- a moderator's own stats -------------------------------------------------------------

@dataclass
class ModeratorStats:
    items_today: int
    median_ms_today: float | None
    golden_answered: int
    golden_agreed: int
    items_total: int

    @property
    def golden_agreement(self) -> float | None:
        return self.golden_agreed / self.golden_answered if self.golden_answered else None


def day_start(now: datetime, settings: Settings) -> datetime:
    tz = ZoneInfo(settings.queue_timezone)
    return datetime.combine(now.astimezone(tz).date(), time(0), tzinfo=tz)


def moderator_stats(*, session: Session, user: User, now: datetime,
                    settings: Settings) -> ModeratorStats:
    mine = and_(Judgment.user_id == user.id, Judgment.worker_kind == "moderator",
                or_(Judgment.assignment_status.is_(None),
                    Judgment.assignment_status != "WITHDRAWN"))  # undone verdicts don't count
    since = day_start(now, settings)
    times = [t for t in session.scalars(select(Judgment.time_spent_ms)
                                        .where(mine, Judgment.created_at >= since))]
    known = [t for t in times if t is not None]
    golden: dict[str, Any] = session.execute(
        select(func.count().label("n"),
               func.coalesce(func.sum(case((Judgment.label == Judgment.golden_label, 1),
                                           else_=0)), 0).label("agree"))
        .where(mine, Judgment.is_golden.is_(True), Judgment.golden_label.is_not(None))
    ).one()._asdict()
    total = session.scalar(select(func.count()).select_from(Judgment).where(mine)) or 0
    return ModeratorStats(items_today=len(times),
                          median_ms_today=statistics.median(known) if known else None,
                          golden_answered=int(golden["n"]), golden_agreed=int(golden["agree"]),
                          items_total=int(total))

