"""Helpers for the crowd backend tests (seeding a crowd queue, a runtime on an emulator),
and the tests of `DbStore`, crowd's ``Store`` on our database."""

from __future__ import annotations

import warnings

from sqlalchemy import select

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from backend.crowdwork.service import CrowdRuntime  # noqa: E402
from backend.crowdwork.settings import CrowdSettings  # noqa: E402
from backend.crowdwork.store import DbStore  # noqa: E402
from backend.db import get_sessionmaker, session_scope, utcnow  # noqa: E402
from backend.items.models import Item  # noqa: E402
from backend.items.service import ingest  # noqa: E402
from backend.queues import service as queues  # noqa: E402
from backend.queues.models import Queue  # noqa: E402
from crowd.store import Store  # noqa: E402
from crowd.toloka import make_client  # noqa: E402
from tests.conftest import item_row  # noqa: E402

LABELS = ["ok", "restricted", "adult", "prohibited"]


def seed_queue(settings, policy, *, n: int, n_golden: int, kind: str = "NEW_PRODUCTS",
               start: int = 0) -> tuple[str, dict[str, str]]:
    """``n`` items in today's ``kind`` queue and ``n_golden`` golden items; returns the
    queue's name and the true label of every item by item id (what workers answer)."""
    now = utcnow()
    rows = [item_row(start + i, external_id=f"C{start + i}") for i in range(n)]
    rows += [item_row(start + 10_000 + i, external_id=f"G{start + i}",
                      golden_label=LABELS[i % len(LABELS)]) for i in range(n_golden)]
    with session_scope() as s:
        _, ids = ingest(session=s, rows=rows, policy=policy, now=now)
        items = s.scalars(select(Item).where(Item.id.in_(ids)).order_by(Item.id)).all()
        real = [it.id for it in items if not it.is_golden]
        queues.enqueue(session=s, kind=kind, item_ids=real, now=now, settings=settings)
        name = s.scalar(select(Queue.name).where(Queue.kind == kind).order_by(Queue.id.desc()))
        truth = {str(it.id): it.golden_label or LABELS[(it.id * 7) % len(LABELS)]
                 for it in items}
    return name, truth


def crowd_runtime(settings, crowd: CrowdSettings, policy, url: str, *, retries: int = 5,
                  timeout: float = 10.0, store: Store | None = None) -> CrowdRuntime:
    sessions = get_sessionmaker(settings.resolved_database_url)
    return CrowdRuntime(client=make_client(url=url, retries=retries, timeout=timeout),
                        sessions=sessions, settings=settings, crowd=crowd, policy=policy,
                        store=store)


def test_db_store_round_trip_and_upsert(settings):
    store = DbStore(get_sessionmaker(settings.resolved_database_url))
    assert isinstance(store, Store)
    assert store.get("pool:x") is None
    store.put("pool:x", {"pool_id": "7", "pool_id_phase": "created"})
    store.put("pool:x", {"pool_id": "7", "n_tasks": 3, "upload": None})
    assert store.get("pool:x") == {"pool_id": "7", "n_tasks": 3, "upload": None}
    got = store.get("pool:x")
    got["pool_id"] = "mutated"
    assert store.get("pool:x")["pool_id"] == "7"


def test_db_store_put_is_durable_on_its_own(settings):
    """A put is committed by itself: a second, unrelated session sees it at once."""
    store = DbStore(get_sessionmaker(settings.resolved_database_url))
    store.put("project:quorum-items", {"project_id": "1"})
    from backend.crowdwork.models import CrowdStoreEntry

    with session_scope() as s:
        row = s.get(CrowdStoreEntry, "project:quorum-items")
        assert row is not None and row.value == {"project_id": "1"}
