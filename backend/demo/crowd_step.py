"""Demo step: today's crowd queues go to the local Toloka emulator and come back decided.

Simulated workers (10% spammers) answer with the generator's true labels at their own
accuracy, golden tasks are mixed in, answers are pulled, reviewed (spammers banned),
aggregated, and unsure items get more answers (dynamic overlap) until they agree or
reach the maximum, after which they go to moderators (``CROWD_DISAGREE``).
"""

from __future__ import annotations

import time

from sqlalchemy import select

from backend.db import session_scope, utcnow

DEMO_KINDS = ("NEW_PRODUCTS", "ML_GOOD")


def item_truth(ctx) -> dict[str, str]:  # noqa: ANN001 - DemoContext
    """The generator's label per item id: what the emulator's simulated workers answer
    (a pair task's truth follows from its two items': same label ⇒ "yes")."""
    from backend.items.models import Item

    with session_scope() as session:
        return {str(i): ctx.truth[ext] for i, ext in
                session.execute(select(Item.id, Item.external_id)).tuples().all()
                if ext in ctx.truth}


def step_crowd(ctx) -> None:  # noqa: ANN001 - DemoContext (runner imports this module)
    from backend.crowdwork.cli import print_report, print_rounds
    from backend.crowdwork.report import crowd_report
    from backend.crowdwork.runtime import open_crowd, work_rounds
    from backend.crowdwork.service import push_queue
    from backend.crowdwork.settings import get_crowd_settings
    from backend.decisions.models import DecisionEvent, ItemStatus
    from backend.items.models import Item
    from backend.policy import get_policy
    from backend.queues.service import list_queues, queue_day

    crowd, policy, out = get_crowd_settings(), get_policy(), ctx.console
    t0 = time.perf_counter()
    with session_scope() as session:
        day = queue_day(utcnow(), ctx.settings)
        names = [r.queue.name for r in list_queues(session=session, day=day, audience="crowd",
                                                   kinds=set(DEMO_KINDS)) if r.pending]
    truth = item_truth(ctx)
    if not names:
        out.print("no crowd queues with pending tasks today")
        return
    cap = crowd.max_items_per_pool or crowd.demo_items_per_queue
    where = crowd.toloka_url or "a local Toloka emulator"
    out.print(f"pushing {', '.join(names)} to {where}; at most {cap} items per queue "
              "(QUORUM_CROWD_DEMO_ITEMS_PER_QUEUE), the rest stay pending")
    pools = []
    with open_crowd(settings=ctx.settings, crowd=crowd, policy=policy, truth=truth) as c:
        for name in names:
            s = push_queue(rt=c.runtime, queue_name=name, limit=cap)
            pools.append(s.pool_id)
            out.print(f"{name}: pool {s.pool_id}, {s.items} items + {s.golden} golden tasks, "
                      f"{s.left_pending} left pending; method {crowd.aggregation}, overlap "
                      f"{crowd.overlap}→{crowd.max_overlap}, {crowd.emulator_workers} workers")
            if c.is_local:
                print_rounds(work_rounds(c, pool_id=s.pool_id, max_rounds=crowd.max_rounds),
                             out)
    with session_scope() as session:
        rows = session.execute(
            select(DecisionEvent.item_id, DecisionEvent.label, Item.external_id)
            .join(Item, Item.id == DecisionEvent.item_id)
            .where(DecisionEvent.source == "crowd", DecisionEvent.crowd_pool_id.in_(pools))
        ).all()
        current = dict(session.execute(select(ItemStatus.item_id, ItemStatus.label)
                                       .where(ItemStatus.source == "crowd")).tuples().all())
        data = crowd_report(session=session)
    known = [(lab, ctx.truth[ext]) for _, lab, ext in rows if ext in ctx.truth]
    right = sum(a == b for a, b in known)
    ctx.timings["crowd"] = time.perf_counter() - t0
    if known:
        out.print(f"crowd decisions: {len(rows)} ({len(current)} current); agreeing with the "
                  f"generator's truth: {right / len(known):.1%}")
    print_report(data, out)
