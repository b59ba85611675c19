"""Routing throughput with the ML hooks, embeddings precomputed (SQLite).

Rules + similarity (neighbour index, reuse decisions) + classifier (a trained logistic
regression, bands by the active threshold set) + queue assignment, on items whose vectors
are already stored, so the figure is the platform's own cost, not the encoder's. Steps:

1. a history: ``--history`` synthetic items ingested and routed, then given the
   generator's true labels as moderator verdicts; the classifier is trained on them;
2. ``--items`` new items are ingested without routing and embedded (timed separately);
3. ``route_items`` runs over them in batches of ``--batch`` (timed): items/s.

    .venv/bin/python bench/route_ml.py [--items 20000] [--history 5000] [--encoder minilm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--history", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--encoder", default="minilm", help="minilm | hashing | open_clip")
    parser.add_argument("--no-reuse", action="store_true",
                        help="apply a threshold set without a reuse distance, so every item "
                             "goes through neighbour-free classification (the synthetic "
                             "stream's templates make most items reusable otherwise)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="quorum_route_ml_"))
    os.environ.update({"QUORUM_DATABASE_URL": f"sqlite:///{tmp / 'q.sqlite3'}",
                       "QUORUM_DATA_DIR": str(tmp / "var"), "QUORUM_ML_ENABLED": "true",
                       "QUORUM_ML_ENCODER": args.encoder, "HF_HUB_OFFLINE": "1"})
    from sqlalchemy import select

    from backend.db import session_scope, utcnow
    from backend.decisions.service import NewDecision, record_decisions
    from backend.demo.generator import generate
    from backend.items.models import Item
    from backend.items.service import ingest
    from backend.migrate import upgrade
    from backend.ml_adapter.hooks import MLHooks
    from backend.ml_adapter.service import ensure_embeddings, get_encoder, train
    from backend.policy import get_policy
    from backend.routing.pipeline import RoutingSummary, route_items
    from backend.rules.service import load_rules_file
    from backend.settings import get_settings

    settings, policy = get_settings(), get_policy()
    upgrade(settings.resolved_database_url)
    data = generate(args.history + args.items, seed=3)
    history, fresh = data.rows[:args.history], data.rows[args.history:]
    encoder = get_encoder()
    print(f"encoder {encoder.encoder_id}; history {len(history):,}, new items {len(fresh):,}")

    with session_scope() as s:
        load_rules_file(session=s, path=Path("backend/defaults/rules.yaml"), policy=policy)
    t0 = time.perf_counter()
    for start in range(0, len(history), args.batch):
        with session_scope() as s:
            now = utcnow()
            _, ids = ingest(session=s, rows=history[start:start + args.batch], policy=policy,
                            now=now)
            route_items(session=s, item_ids=ids, now=now, settings=settings)
    with session_scope() as s:
        ext = dict(s.execute(select(Item.external_id, Item.id)).tuples().all())
        record_decisions(session=s, decisions=[
            NewDecision(item_id=ext[r["external_id"]], label=data.truth[r["external_id"]],
                        source="moderator") for r in history])
        art = train(session=s)
    print(f"history routed, verdicts recorded, classifier v{art.version} trained "
          f"(held-out accuracy {art.metrics.get('accuracy', 0):.3f}) in "
          f"{time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    new_ids: list[int] = []
    for start in range(0, len(fresh), args.batch):
        with session_scope() as s:
            _, ids = ingest(session=s, rows=fresh[start:start + args.batch], policy=policy)
            rows = [r._asdict() for r in s.execute(select(
                Item.id, Item.title, Item.description, Item.image).where(Item.id.in_(ids)))]
            ensure_embeddings(session=s, rows=rows, encoder=encoder)
            new_ids.extend(ids)
    embed_s = time.perf_counter() - t0
    print(f"ingested and embedded {len(new_ids):,} items in {embed_s:.1f} s "
          f"({len(new_ids) / embed_s:,.0f} items/s; not part of the routing figure)")

    if args.no_reuse:
        from backend.calibration import thresholds

        with session_scope() as s:
            ts = thresholds.active_threshold_set(session=s, policy=policy)
            new = thresholds.propose(session=s, policy=policy, bands=dict(ts.bands),
                                     reuse_distance=None, auto_decide=list(ts.auto_decide))
            thresholds.apply(session=s, version=new.version)
        print("threshold set without a reuse distance applied (--no-reuse)")
    rates: list[float] = []
    total = RoutingSummary()
    t0 = time.perf_counter()
    for start in range(0, len(new_ids), args.batch):
        batch = new_ids[start:start + args.batch]
        tb = time.perf_counter()
        with session_scope() as s:
            total.merge(route_items(session=s, item_ids=batch, now=utcnow(), settings=settings,
                                    hooks=MLHooks()))
        rates.append(len(batch) / (time.perf_counter() - tb))
    elapsed = time.perf_counter() - t0
    print(f"routed {len(new_ids):,} items (rules + similarity + classifier + queues) in "
          f"{elapsed:.1f} s: median of batches {statistics.median(rates):,.0f} items/s, "
          f"overall {len(new_ids) / elapsed:,.0f} items/s (target >= 2,000)")
    print(f"  decided: {dict(Counter(total.decided))}; queued: {dict(total.queued)}; "
          f"spot checks {total.spot_checks}")


if __name__ == "__main__":
    main()
