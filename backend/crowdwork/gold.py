"""The golden set's life cycle: rotation, retirement past an exposure cap, replenishment
from moderator verdicts with high agreement, and its coverage for the crowd report.

* **Exposure** of a golden item: the crowd's control answers on it in label pools (any
  review verdict: a rejected worker saw it too), and the distinct workers who gave them.
* **Rotation** (`control_items`): a new pool's control tasks are the active golden items
  shown least so far (oldest first among equals), so consecutive pools take different
  ones instead of the same oldest few, and a worker meets the same item again only once
  the rest of the set has been shown as often.
* **Retirement** (`retire_overexposed`): once an item's exposures reach
  ``QUORUM_CROWD_GOLDEN_MAX_EXPOSURES`` it is retired (a `GoldenItem` row, state
  ``retired``, the exposures and the reason) and never mixed into a pool again. It stays
  golden (``Item.is_golden``): moderators' golden checks still use it.
* **Replenishment** (`replenish`): items whose verdict two humans agree on become golden
  (``Item.is_golden``, ``golden_label``, a `GoldenItem` row with the source): decided by a
  moderator where the crowd's majority agreed (at least
  ``QUORUM_CROWD_GOLDEN_CROWD_MIN_ANSWERS`` crowd answers, the moderator's label with a
  share of at least ``QUORUM_CROWD_GOLDEN_CROWD_AGREEMENT``), or decided the same way by
  two moderators; never one a moderator disagreed on. Labels are taken in turn, the
  scarcest in the active set first, so the set keeps every class.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.crowdwork.models import CrowdPool, GoldenItem, Judgment
from backend.items.models import Item

SOURCES = ("ingest", "moderator_crowd", "two_moderators")


@dataclass
class Exposure:
    answers: int = 0
    workers: int = 0
    pools: int = 0


def exposures(session: Session, *, item_ids: Collection[int] | None = None
              ) -> dict[int, Exposure]:
    """Per golden item shown as a control task: crowd control answers, workers, pools."""
    stmt = (select(Judgment.item_id, func.count(), func.count(func.distinct(Judgment.worker_id)),
                   func.count(func.distinct(Judgment.crowd_pool_id)))
            .join(CrowdPool, CrowdPool.id == Judgment.crowd_pool_id)
            .where(Judgment.worker_kind == "crowd", Judgment.is_golden.is_(True),
                   CrowdPool.kind == "item")
            .group_by(Judgment.item_id))
    if item_ids is not None:
        ids = sorted(set(item_ids))
        if not ids:
            return {}
        stmt = stmt.where(Judgment.item_id.in_(ids))
    return {int(i): Exposure(int(n), int(w), int(p)) for i, n, w, p in session.execute(stmt)}


def retired_ids(session: Session) -> set[int]:
    return set(session.scalars(select(GoldenItem.item_id).where(GoldenItem.state == "retired")))


def retire_overexposed(session: Session, *, cap: int, now: datetime,
                       item_ids: Collection[int] | None = None) -> list[int]:
    """Retire the golden items (of ``item_ids``, or all) whose exposures reached ``cap``
    (0: no cap); returns the ids retired now."""
    if cap <= 0:
        return []
    seen = exposures(session, item_ids=item_ids)
    over = sorted(i for i, e in seen.items() if e.answers >= cap)
    if not over:
        return []
    rows = {g.item_id: g for g in session.scalars(
        select(GoldenItem).where(GoldenItem.item_id.in_(over)))}
    labels = dict(session.execute(select(Item.id, Item.golden_label)
                                  .where(Item.id.in_(over))).tuples().all())
    done = []
    for item_id in over:
        row = rows.get(item_id)
        if row is not None and row.state == "retired":
            continue
        if row is None:
            row = GoldenItem(item_id=item_id, source="ingest", label=labels.get(item_id),
                             created_at=now)
            session.add(row)
        e = seen[item_id]
        row.state, row.exposures, row.retired_at = "retired", e.answers, now
        row.reason = (f"{e.answers} control answers from {e.workers} workers in {e.pools} "
                      f"pools reached the exposure cap of {cap}")
        done.append(item_id)
    session.flush()
    return done


def control_items(session: Session, *, labels: Sequence[str], exclude: set[int], n: int,
                  cap: int = 0) -> list[Item]:
    """Up to ``n`` active golden items with a label among ``labels``, none of ``exclude``,
    the least exposed first (oldest first among equals): the rotation. Retired items and
    items at the exposure ``cap`` are left out."""
    if n <= 0:
        return []
    retired = retired_ids(session)
    ids = [i for i in session.scalars(
        select(Item.id).where(Item.is_golden.is_(True), Item.golden_label.in_(list(labels)))
        .order_by(Item.id)) if i not in exclude and i not in retired]
    seen = exposures(session, item_ids=ids) if ids else {}
    if cap > 0:
        ids = [i for i in ids if seen.get(i, Exposure()).answers < cap]
    ids.sort(key=lambda i: (seen.get(i, Exposure()).answers, i))
    chosen = ids[:n]
    items = {it.id: it for it in session.scalars(select(Item).where(Item.id.in_(chosen)))}
    return [items[i] for i in chosen]


def active_count(session: Session, *, labels: Sequence[str] | None = None) -> Counter[str]:
    """Active golden items per label."""
    stmt = select(Item.id, Item.golden_label).where(Item.is_golden.is_(True),
                                                    Item.golden_label.is_not(None))
    if labels is not None:
        stmt = stmt.where(Item.golden_label.in_(list(labels)))
    retired = retired_ids(session)
    return Counter(lab for i, lab in session.execute(stmt) if i not in retired)


@dataclass
class Candidate:
    item_id: int
    label: str
    source: str


def candidates(session: Session, *, labels: Sequence[str], min_crowd_answers: int = 3,
               crowd_agreement: float = 0.7) -> list[Candidate]:
    """Items (not golden yet) whose label two humans agree on, oldest first: every
    moderator verdict on the item says the same label, and either two moderators said it
    or the crowd's majority did (``min_crowd_answers``, share ≥ ``crowd_agreement``)."""
    mods: dict[int, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for item_id, label, who in session.execute(
            select(Judgment.item_id, Judgment.label, Judgment.worker_id)
            .join(Item, Item.id == Judgment.item_id)
            .where(Judgment.worker_kind == "moderator", Judgment.task_attempt.is_not(None),
                   Item.is_golden.is_(False))):
        mods[int(item_id)][str(label)].add(str(who))
    agreed = {i: next(iter(by)) for i, by in mods.items() if len(by) == 1}
    agreed = {i: lab for i, lab in agreed.items() if lab in labels}
    if not agreed:
        return []
    crowd: dict[int, Counter[str]] = defaultdict(Counter)
    ids = sorted(agreed)
    for start in range(0, len(ids), 500):
        for item_id, label, n in session.execute(
                select(Judgment.item_id, Judgment.label, func.count())
                .join(CrowdPool, CrowdPool.id == Judgment.crowd_pool_id)
                .where(Judgment.worker_kind == "crowd", Judgment.is_golden.is_(False),
                       CrowdPool.kind == "item", Judgment.item_id.in_(ids[start:start + 500]),
                       (Judgment.assignment_status.is_(None))
                       | (Judgment.assignment_status != "REJECTED"))
                .group_by(Judgment.item_id, Judgment.label)):
            crowd[int(item_id)][str(label)] += int(n)
    known = set(session.scalars(select(GoldenItem.item_id).where(GoldenItem.item_id.in_(ids))))
    out = []
    for item_id in ids:
        if item_id in known:
            continue
        label = agreed[item_id]
        if len(mods[item_id][label]) >= 2:
            out.append(Candidate(item_id, label, "two_moderators"))
            continue
        votes = crowd.get(item_id)
        if votes:
            n = sum(votes.values())
            top, k = votes.most_common(1)[0]
            if (top == label and n >= min_crowd_answers and k / n >= crowd_agreement
                    and sum(v == k for v in votes.values()) == 1):
                out.append(Candidate(item_id, label, "moderator_crowd"))
    return out


def replenish(session: Session, *, labels: Sequence[str], n: int, now: datetime,
              min_crowd_answers: int = 3, crowd_agreement: float = 0.7) -> list[Candidate]:
    """Promote up to ``n`` `candidates` to golden items, the scarcest label in the active
    set first (oldest item first within a label); returns those promoted."""
    if n <= 0:
        return []
    pool = candidates(session, labels=labels, min_crowd_answers=min_crowd_answers,
                      crowd_agreement=crowd_agreement)
    by_label: dict[str, list[Candidate]] = defaultdict(list)
    for c in pool:
        by_label[c.label].append(c)
    have = active_count(session, labels=labels)
    chosen: list[Candidate] = []
    while len(chosen) < n and any(by_label.values()):
        label = min((lab for lab, cs in by_label.items() if cs),
                    key=lambda lab: (have[lab], lab))
        chosen.append(by_label[label].pop(0))
        have[label] += 1
    items = {it.id: it for it in session.scalars(
        select(Item).where(Item.id.in_([c.item_id for c in chosen])))}
    for c in chosen:
        items[c.item_id].is_golden, items[c.item_id].golden_label = True, c.label
        session.add(GoldenItem(item_id=c.item_id, state="active", source=c.source,
                               label=c.label, exposures=0, created_at=now))
    session.flush()
    return chosen


def coverage(session: Session, *, cap: int, top: int = 50) -> dict[str, Any]:
    """The golden set for the crowd report: active and retired items, where they came
    from, exposures per item and the workers who saw each (the most exposed first), and
    how often a worker met the same control task again in another pool."""
    golden = dict(session.execute(select(Item.id, Item.golden_label).where(
        Item.is_golden.is_(True), Item.golden_label.is_not(None))).tuples().all())
    rows = {g.item_id: g for g in session.scalars(select(GoldenItem))}
    seen = exposures(session)
    repeats = session.execute(
        select(func.count()).select_from(
            select(Judgment.item_id, Judgment.worker_id)
            .join(CrowdPool, CrowdPool.id == Judgment.crowd_pool_id)
            .where(Judgment.worker_kind == "crowd", Judgment.is_golden.is_(True),
                   CrowdPool.kind == "item")
            .group_by(Judgment.item_id, Judgment.worker_id)
            .having(func.count() > 1).subquery())).scalar_one()
    items: list[dict[str, Any]] = []
    for item_id, label in golden.items():
        row = rows.get(item_id)
        e = seen.get(item_id, Exposure())
        items.append({
            "item_id": item_id, "label": label,
            "state": row.state if row is not None else "active",
            "source": row.source if row is not None else "ingest",
            "exposures": e.answers, "workers": e.workers, "pools": e.pools,
            "retired_at": row.retired_at if row is not None else None,
        })
    items.sort(key=lambda r: (-r["exposures"], r["item_id"]))
    active = [r for r in items if r["state"] == "active"]
    shown = [r["exposures"] for r in items if r["exposures"]]
    return {
        "exposure_cap": cap, "items_total": len(items), "active": len(active),
        "retired": len(items) - len(active),
        "never_shown": sum(1 for r in active if not r["exposures"]),
        "by_source": dict(Counter(r["source"] for r in items)),
        "active_by_label": dict(Counter(r["label"] for r in active)),
        "control_answers": sum(shown),
        "max_exposures": max(shown, default=0),
        "mean_exposures": round(sum(shown) / len(shown), 2) if shown else None,
        "repeat_workers": int(repeats or 0),
        "items": items[:top],
    }
