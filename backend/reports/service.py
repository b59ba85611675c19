"""The figures analysts read: spot-check precision of automation, and the daily class mix.

Class-mix subsets (an item is in every subset it matches; ``all`` has every item):

- ``ads_feed``: ``metadata.ads_feed`` is true;
- ``new_items``: ``is_new``;
- ``top_sellers``: the seller is in the top decile of sellers by total GMV (over all
  items; at least one seller);
- ``top_gmv``: ``gmv >= QUORUM_GMV_TOP_THRESHOLD``;
- ``top_search``: ``metadata.top_search`` is true.

Percentages are of the items *decided that day* (``item_status.decided_at`` in the day,
queue time zone), by their current label, over every policy label including
``not_found``; each subset's row adds up to 100 %.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.calibration.service import day_bounds
from backend.calibration.settings import CalibrationSettings, get_calibration_settings
from backend.crowdwork.models import Judgment
from backend.decisions.models import SOURCES, DecisionEvent, ItemStatus
from backend.items.models import Item
from backend.policy import Policy, get_policy
from backend.queues.models import Queue, Task
from backend.routing.spot_checks import KIND as SPOT_CHECK
from backend.settings import Settings, get_settings

SUBSETS = ("all", "ads_feed", "new_items", "top_sellers", "top_gmv", "top_search")
#: Source names as the report shows them.
SOURCE_TITLES = {"rule": "rules", "hash": "hash banks", "similarity": "similarity",
                 "classifier": "classifier", "moderator": "moderators", "crowd": "crowd"}


# ------------------------------------------------------------------ spot checks
#: The spot-check row that pools every band (each check weighted by the items it stands for).
ALL_BANDS = "all bands"


def spot_checks(*, session: Session, cal: CalibrationSettings | None = None,
                settings: Settings | None = None) -> pd.DataFrame:
    """Measured precision of automation per band from done ``SPOT_CHECK`` tasks.

    The human verdict of a task is the majority of its judgments (one for a moderator).
    Each check is weighted by ``1 / sampling probability`` (the rate its task recorded,
    ``backend.calibration.service.label_probability``: the same probabilities calibration
    weighs its labels by), so a band whose rate changed, and the pooled row
    :data:`ALL_BANDS` over bands checked at different rates, count each check for the
    automatic decisions it stands for; ``n_effective`` is the effective sample size the
    interval rests on (Kish). Target: the deciding target for classifier bands and rules,
    the reuse target for similarity (the pooled row: the deciding target). Columns of
    ``ml.calibration.spot_check_precision`` plus ``rates`` (the sampling rates seen) and
    ``warning``.
    """
    from backend.calibration.service import label_probability
    from ml.calibration import spot_check_precision

    cal = cal or get_calibration_settings()
    rates = (settings or get_settings()).spot_check_rates
    tasks = session.execute(select(Task.id, Task.payload, Task.item_id)
                            .join(Queue, Queue.id == Task.queue_id)
                            .where(Queue.kind == SPOT_CHECK, Task.state == "done")).all()
    if not tasks:
        return pd.DataFrame()
    payload = {t: p or {} for t, p, _ in tasks}
    item_of = {t: i for t, _, i in tasks}
    verdicts: dict[int, Counter[str]] = {}
    ids = list(payload)
    for start in range(0, len(ids), 500):
        for task_id, label in session.execute(select(Judgment.task_id, Judgment.label).where(
                Judgment.task_id.in_(ids[start:start + 500])).order_by(Judgment.id)):
            verdicts.setdefault(task_id, Counter())[label] += 1
    rows = [{"band": payload[t].get("band") or "unknown", "auto_label": payload[t].get(
        "auto_label"), "human_label": c.most_common(1)[0][0], "task_id": t,
        "item_id": item_of[t],
        "probability": label_probability(details=None, payload=payload[t], spot_check=True,
                                         rates=rates)} for t, c in verdicts.items()]
    if not rows:
        return pd.DataFrame()
    checks = pd.DataFrame(rows)
    checks["weight"] = 1.0 / checks["probability"]
    if checks["band"].nunique() > 1:
        checks = pd.concat([checks, checks.assign(band=ALL_BANDS)], ignore_index=True)
    targets = {b: (cal.reuse_target_precision if b == "similarity" else cal.target_precision)
               for b in checks["band"].unique()}
    table = spot_check_precision(checks, target_precision=targets, confidence=cal.confidence,
                                 method=cal.bound_method)  # type: ignore[arg-type]
    seen = checks.groupby("band")["probability"].agg(["min", "max"]).reindex(table["band"])
    table["rates"] = [f"{lo:.0%}" if lo == hi else f"{lo:.0%}–{hi:.0%}"
                      for lo, hi in zip(seen["min"], seen["max"], strict=True)]
    table["weighted"] = (seen["min"] != seen["max"]).to_numpy()
    table["samples"] = [spot_check_samples(checks[checks["band"] == b]) for b in table["band"]]
    # the pooled row last, the bands sorted before it
    table = pd.concat([table[table["band"] != ALL_BANDS], table[table["band"] == ALL_BANDS]],
                      ignore_index=True)

    def size(n: int, n_eff: float, weighted: bool) -> str:
        return (f"{n} checks (effective sample size {n_eff:.1f}, weighted by sampling rate)"
                if weighted else f"{n} checks")

    table["warning"] = [
        (f"measured precision {p:.1%} of {size(n, ne, w)} is below the target {t:.0%} "
         f"({cal.confidence:.0%} interval {lo:.1%}–{hi:.1%})") if below else
        (f"not yet shown to meet the target {t:.0%} (lower bound {lo:.1%})") if unproven else ""
        for p, n, ne, w, t, lo, hi, below, unproven in zip(
            table["precision"], table["n"], table["n_effective"], table["weighted"],
            table["target"], table["precision_lower"], table["precision_upper"],
            table["below_target"], table["unproven"], strict=True)]
    return table


#: how many checked items a report names per band (with a link to each item's page)
SAMPLE_ITEMS = 10


def spot_check_samples(checks: pd.DataFrame) -> list[dict[str, Any]]:
    """Up to ``SAMPLE_ITEMS`` checked items of one band, the disagreements (the check's
    verdict differs from the automatic label) first, latest first: ``item_id``,
    ``auto_label``, ``human_label``, ``agreed``."""
    rows = sorted(({"item_id": int(r.item_id), "auto_label": r.auto_label,
                    "human_label": r.human_label, "agreed": r.auto_label == r.human_label,
                    "_task": int(r.task_id)} for r in checks.itertuples()),
                  key=lambda r: (r["agreed"], -r["_task"]))[:SAMPLE_ITEMS]
    return [{k: v for k, v in r.items() if k != "_task"} for r in rows]


# ------------------------------------------------------------------ daily class mix
@dataclass
class DailyReport:
    day: date
    labels: list[str]
    #: one row per subset: ``subset``, ``n``, then one % column per label
    class_mix: pd.DataFrame
    #: ``source``, ``decisions``, ``share`` (% of the day's decision events)
    by_source: pd.DataFrame
    definitions: dict[str, str] = field(default_factory=dict)
    #: the platform source the report is filtered to (None: every source)
    source: str | None = None


def _truthy(meta: Any, key: str) -> bool:
    return bool(isinstance(meta, dict) and meta.get(key))


def top_sellers(*, session: Session, share: float = 0.1) -> set[str]:
    """Sellers in the top ``share`` by total GMV (at least one)."""
    rows = session.execute(select(Item.seller_id, func.sum(Item.gmv)).where(
        Item.seller_id.is_not(None)).group_by(Item.seller_id)).all()
    ranked = sorted(((s, g or 0.0) for s, g in rows), key=lambda r: (-r[1], r[0]))
    if not ranked:
        return set()
    return {s for s, _ in ranked[:max(1, math.ceil(len(ranked) * share))]}


def daily_report(*, session: Session, day: date, settings: Settings | None = None,
                 policy: Policy | None = None, source: str | None = None) -> DailyReport:
    """The day's class mix per subset and decisions by source; ``source``: only the
    items of that platform source (``Item.source``)."""
    settings, policy = settings or get_settings(), policy or get_policy()
    start, end = day_bounds(day, settings)
    sellers = top_sellers(session=session)
    stmt = (select(ItemStatus.label, Item.metadata_, Item.is_new, Item.seller_id, Item.gmv)
            .join(Item, Item.id == ItemStatus.item_id)
            .where(ItemStatus.decided_at >= start, ItemStatus.decided_at < end,
                   ItemStatus.label.is_not(None)))
    if source is not None:
        stmt = stmt.where(Item.source == source)
    rows = session.execute(stmt).all()
    labels = list(policy.keys)
    counts = {s: Counter() for s in SUBSETS}
    for label, meta, is_new, seller, gmv in rows:
        member = {"all": True, "ads_feed": _truthy(meta, "ads_feed"), "new_items": bool(is_new),
                  "top_sellers": seller in sellers,
                  "top_gmv": gmv is not None and gmv >= settings.gmv_top_threshold,
                  "top_search": _truthy(meta, "top_search")}
        for subset, inside in member.items():
            if inside:
                counts[subset][label] += 1
    mix = []
    for subset in SUBSETS:
        n = sum(counts[subset].values())
        mix.append({"subset": subset, "n": n, **{
            lab: (100.0 * counts[subset][lab] / n if n else 0.0) for lab in labels}})
    ev_stmt = select(DecisionEvent.source, func.count()).where(
        DecisionEvent.created_at >= start, DecisionEvent.created_at < end)
    if source is not None:
        ev_stmt = ev_stmt.join(Item, Item.id == DecisionEvent.item_id).where(
            Item.source == source)
    events = dict(session.execute(ev_stmt.group_by(DecisionEvent.source)).tuples().all())
    total = sum(events.values())
    by_source = pd.DataFrame([{"source": SOURCE_TITLES.get(s, s), "decisions": events.get(s, 0),
                               "share": 100.0 * events.get(s, 0) / total if total else 0.0}
                              for s in SOURCES])
    return DailyReport(day=day, labels=labels, class_mix=pd.DataFrame(mix), by_source=by_source,
                       definitions=subset_definitions(settings), source=source)


def subset_definitions(settings: Settings) -> dict[str, str]:
    return {"all": "every item decided that day",
            "ads_feed": "metadata.ads_feed is true",
            "new_items": "the item is new (is_new)",
            "top_sellers": "seller in the top decile of sellers by total GMV",
            "top_gmv": f"GMV >= {settings.gmv_top_threshold:g} (QUORUM_GMV_TOP_THRESHOLD)",
            "top_search": "metadata.top_search is true"}


def latest_decision_day(*, session: Session, settings: Settings | None = None) -> date | None:
    from backend.queues.service import queue_day

    settings = settings or get_settings()
    last = session.scalar(select(func.max(ItemStatus.decided_at)))
    return queue_day(last, settings) if last else None
