"""``quorum demo``: the whole loop on the embedded default, offline.

Steps run in order on one ``DemoContext``; later parts of the system (ML, crowd,
calibration) add their steps to ``STEPS`` where they belong.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from backend.db import dispose_engines, session_scope, utcnow
from backend.demo.calibration_step import step_calibrate
from backend.demo.crowd_step import step_crowd
from backend.settings import Settings, get_settings

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "defaults" / "rules.yaml"


@dataclass
class DemoContext:
    settings: Settings
    console: Console
    n_items: int
    seed: int
    moderated: int
    rng: random.Random
    truth: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


Step = Callable[[DemoContext], None]


def step_setup(ctx: DemoContext, fresh: bool = True) -> None:
    from backend.migrate import upgrade
    from backend.policy import get_policy
    from backend.rules.service import load_rules_file
    from backend.users.service import audit, create_user, issue_token

    url = ctx.settings.resolved_database_url
    if fresh and url.startswith("sqlite"):
        dispose_engines()
        path = Path(url.split("///", 1)[1])
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    upgrade(url)
    from backend.web.security import ensure_secret_key_file

    # `quorum serve` after the demo signs its cookies with this key (mode 0600).
    ensure_secret_key_file(ctx.settings)
    with session_scope() as session:
        load_rules_file(session=session, path=DEFAULT_RULES, policy=get_policy())
        from backend.users.models import User

        if session.scalar(select(func.count()).select_from(User)) == 0:
            specs = [("admin", "admin", []), ("analyst", "analyst", []),
                     ("alice", "moderator", ["*"]),
                     ("bob", "moderator", ["ML_BAD_HIGH", "ML_BAD_MIDDLE", "ML_HIDE_MIDDLE",
                                           "GMV", "EXP_V", "SIMILAR_CONFLICT", "SPOT_CHECK",
                                           "MANUAL"]),
                     ("carol", "moderator", ["NEW_PRODUCTS", "ML_GOOD", "MANUAL", "GL"])]
            for name, role, kinds in specs:
                user = create_user(session=session, username=name, role=role,
                                   password=f"{name}-demo-pass", queue_kinds=kinds)
                audit(session=session, user=None, action="users.create", target_type="user",
                      target_id=name, details={"role": role, "queue_kinds": kinds,
                                               "via": "demo"})
                ctx.tokens[name] = issue_token(session=session, user=user)


def _ingest_rows(ctx: DemoContext, rows: list[dict[str, Any]], label: str) -> None:
    from backend.items.service import ingest
    from backend.jobs.dispatch import accept
    from backend.policy import get_policy
    from backend.routing.pipeline import RoutingSummary

    total = RoutingSummary()
    t0 = time.perf_counter()
    for start in range(0, len(rows), 1000):
        with session_scope() as session:
            now = utcnow()
            _, created = ingest(session=session, rows=rows[start:start + 1000],
                                policy=get_policy(), now=now)
            summary = accept(session=session, item_ids=created, now=now,
                             settings=ctx.settings, wait=True)
            assert summary is not None  # wait=True: committed, then routed
            total.merge(summary)
    took = time.perf_counter() - t0
    ctx.timings[label] = took
    ctx.notes[label] = total
    ctx.console.print(f"{label}: {len(rows)} items in {took:.1f} s "
                      f"({len(rows) / max(took, 1e-9):.0f} items/s)")
    ctx.console.print(f"  decided: {dict(total.decided)}; queued: {dict(total.queued)}")
    if total.shadow_outcomes:
        ctx.console.print(f"  in shadow (not backed: recorded, sent to people): "
                          f"{dict(total.shadow_outcomes)}")
    ctx.console.print(f"  rule hits {dict(total.rule_hits)}; shadow hits "
                      f"{dict(total.shadow_hits)}")


def step_ingest(ctx: DemoContext) -> None:
    """Wave 1 (50% of the stream): a fresh install, nothing calibrated: only rules decide;
    similarity and the zero-shot bands run in shadow and route."""
    from backend.demo.generator import generate

    data = generate(ctx.n_items, seed=ctx.seed,
                    photo_dir=ctx.settings.data_dir / "demo" / "images")
    ctx.truth = data.truth
    ctx.notes["duplicates"] = len(data.duplicates_of)
    one, two = int(len(data.rows) * 0.5), int(len(data.rows) * 0.7)
    ctx.notes["wave2"] = data.rows[one:two]
    ctx.notes["wave3"] = data.rows[two:]
    _ingest_rows(ctx, data.rows[:one], "wave 1 ingest + route")


def step_train(ctx: DemoContext) -> None:
    """Train the classifier on the verdicts so far (if there are enough)."""
    from backend.errors import ValidationFailed
    from backend.ml_adapter.service import train
    from backend.ml_adapter.settings import get_ml_settings

    if not get_ml_settings().enabled:
        ctx.console.print("ML is off (QUORUM_ML_ENABLED=false): no training")
        return
    t0 = time.perf_counter()
    try:
        with session_scope() as session:
            art = train(session=session)
            m = art.metrics
    except ValidationFailed as exc:
        ctx.console.print(f"not training yet: {exc.message}")
        return
    ctx.timings["train"] = time.perf_counter() - t0
    ctx.console.print(f"classifier v{art.version} on {art.encoder_id}: {art.train_size} "
                      f"verdicts, held-out accuracy {m.get('accuracy', 0):.3f}, "
                      f"macro-F1 {m.get('macro_f1', 0):.3f}")


def step_wave2(ctx: DemoContext) -> None:
    """Wave 2 (20%): the trained classifier scores, but no set is calibrated for it yet:
    its bands route, and what they (and similarity) would decide is recorded in shadow."""
    _ingest_rows(ctx, ctx.notes.pop("wave2", []), "wave 2 ingest + route")


def step_wave3(ctx: DemoContext) -> None:
    """Wave 3 (30%), after calibration: the bands and the reuse distance that calibration
    backed decide; the others stay in shadow."""
    _ingest_rows(ctx, ctx.notes.pop("wave3", []), "wave 3 ingest + route")


def step_moderate(ctx: DemoContext) -> None:
    """Simulated moderators lease and answer tasks (95% accurate, 4-20 s per item)."""
    from backend.items.models import Item
    from backend.policy import get_policy
    from backend.queues.service import lease_next
    from backend.queues.work import submit_verdict
    from backend.users.service import get_user

    policy = get_policy()
    names = ["alice", "bob", "carol"]
    done = 0
    t0 = time.perf_counter()
    idle: set[str] = set()
    while done < ctx.moderated and len(idle) < len(names):
        name = names[done % len(names)] if not idle else \
            next(n for n in names if n not in idle)
        with session_scope() as session:
            user = get_user(session=session, username=name)
            task = lease_next(session=session, user=user, now=utcnow(), settings=ctx.settings)
            if task is None:
                idle.add(name)
                continue
            item = session.get(Item, task.item_id)
            assert item is not None
            true = ctx.truth.get(item.external_id, "ok")
            label = true if ctx.rng.random() < 0.95 else ctx.rng.choice(policy.class_keys)
            submit_verdict(session=session, task_id=task.id, user=user, label=label,
                           policy=policy, now=utcnow(),
                           time_spent_ms=int(ctx.rng.uniform(4000, 20000)))
        done += 1
    ctx.timings["moderation"] = ctx.timings.get("moderation", 0.0) + time.perf_counter() - t0
    ctx.console.print(f"simulated moderators answered {done} tasks")


def step_summary(ctx: DemoContext) -> None:
    from backend.decisions.models import DecisionEvent, ItemStatus
    from backend.tables import queue_table

    with session_scope() as session:
        by_source = session.execute(
            select(DecisionEvent.source, DecisionEvent.label, func.count())
            .group_by(DecisionEvent.source, DecisionEvent.label)).all()
        states = dict(session.execute(
            select(ItemStatus.state, func.count()).group_by(ItemStatus.state)).tuples().all())
        current = session.execute(
            select(ItemStatus.source, ItemStatus.label, ItemStatus.item_id)
            .where(ItemStatus.state == "decided")).all()
        from backend.items.models import Item

        ext = dict(session.execute(select(Item.id, Item.external_id)).tuples().all())
    table = Table(title="Decisions by source and label (events)")
    table.add_column("source")
    labels = sorted({lab for _, lab, _ in by_source})
    for lab in labels:
        table.add_column(lab, justify="right")
    table.add_column("total", justify="right")
    grid: dict[str, Counter[str]] = {}
    for src, lab, n in by_source:
        grid.setdefault(src, Counter())[lab] += n
    for src in sorted(grid):
        table.add_row(src, *[str(grid[src].get(lab, 0)) for lab in labels],
                      str(sum(grid[src].values())))
    ctx.console.print(table)
    correct = Counter()
    total = Counter()
    for src, lab, item_id in current:
        true = ctx.truth.get(ext.get(item_id, ""))
        if true is None:
            continue
        total[src] += 1
        correct[src] += int(true == lab)
    acc = ", ".join(f"{s} {correct[s] / total[s]:.1%} of {total[s]}" for s in sorted(total))
    ctx.console.print(f"item states: {states}")
    ctx.console.print(f"current decisions agreeing with the generator's truth: {acc}")
    with session_scope() as session:
        from backend.routing.models import ShadowOutcome

        shadows = session.execute(select(ShadowOutcome.source, ShadowOutcome.label,
                                         ShadowOutcome.item_id)).all()
    if shadows:
        right, seen = Counter(), Counter()
        for src, lab, item_id in shadows:
            true = ctx.truth.get(ext.get(item_id, ""))
            if true is not None:
                seen[src] += 1
                right[src] += int(true == lab)
        ctx.console.print("shadow outcomes (would have decided, went to people), agreeing "
                          "with the truth: " + ", ".join(
                              f"{s} {right[s] / seen[s]:.1%} of {seen[s]}" for s in sorted(seen)))
    ctx.console.print(queue_table(title="Today's queues"))
    ctx.console.print("time taken: " + ", ".join(f"{k} {v:.1f} s"
                                                 for k, v in ctx.timings.items()))


STEPS: list[tuple[str, Step]] = [
    ("wave 1: ingest", step_ingest),
    ("moderators", step_moderate),
    ("train", step_train),
    ("wave 2: ingest", step_wave2),
    ("moderators", step_moderate),
    ("crowd", step_crowd),
    ("calibration", step_calibrate),
    ("wave 3: ingest", step_wave3),
]


def run_demo(*, n_items: int = 3000, seed: int = 7, moderated: int = 300, fresh: bool = True,
             console: Console | None = None, settings: Settings | None = None) -> DemoContext:
    settings = settings or get_settings()
    console = console or Console()
    ctx = DemoContext(settings=settings, console=console, n_items=n_items, seed=seed,
                      moderated=moderated, rng=random.Random(seed))
    t0 = time.perf_counter()
    console.rule("Quorum demo")
    console.print(f"database: {settings.resolved_database_url}")
    step_setup(ctx, fresh=fresh)
    for name, step in STEPS:
        console.rule(name)
        step(ctx)
    ctx.timings["total"] = time.perf_counter() - t0
    console.rule("summary")
    step_summary(ctx)
    return ctx
