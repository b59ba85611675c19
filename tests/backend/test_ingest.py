import pytest
from sqlalchemy import func, select

from backend.decisions.models import ItemStatus
from backend.items.models import Item
from tests.conftest import auth, item_row


def test_ingest_creates_and_routes(client, make_user, session):
    _, token = make_user("ana", "analyst")
    r = client.post("/api/v1/items", json=[item_row(i) for i in range(5)], headers=auth(token))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["created"], body["updated"], body["unchanged"]) == (5, 0, 0)
    assert all(i > 0 for i in body["item_ids"])
    states = session.scalars(select(ItemStatus.state)).all()
    assert sorted(states) == ["queued"] * 5  # new items without a decision wait for people


def test_reingest_is_idempotent_and_keeps_decisions(client, make_user, session):
    _, token = make_user("ana", "analyst")
    rows = [item_row(i) for i in range(3)]
    first = client.post("/api/v1/items", json=rows, headers=auth(token)).json()
    again = client.post("/api/v1/items", json={"items": rows}, headers=auth(token)).json()
    assert again["created"] == 0 and again["unchanged"] == 3
    assert again["item_ids"] == first["item_ids"]
    changed = [dict(rows[0], title="Item 0, edited")]
    res = client.post("/api/v1/items", json=changed, headers=auth(token)).json()
    assert res["updated"] == 1 and res["created"] == 0
    assert session.scalar(select(func.count()).select_from(Item)) == 3
    assert session.get(Item, first["item_ids"][0]).title == "Item 0, edited"


def test_bad_batch_stores_nothing_and_lists_row_errors(client, make_user, session):
    _, token = make_user("ana", "analyst")
    rows = [item_row(1), item_row(2, price=-3), {"source": "shop"}, item_row(1)]
    r = client.post("/api/v1/items", json=rows, headers=auth(token))
    assert r.status_code == 422
    errors = r.json()["details"]["errors"]
    assert {(e["row"], e["field"]) for e in errors} >= {(2, "price"), (3, "external_id"),
                                                       (4, "external_id")}
    assert all(e["message"] for e in errors)
    assert session.scalar(select(func.count()).select_from(Item)) == 0


def test_partial_batch_stores_good_rows_and_says_so(client, make_user, session):
    _, token = make_user("ana", "analyst")
    rows = [item_row(1), item_row(2, currency="DOLLARS"), item_row(3)]
    r = client.post("/api/v1/items?partial=true", json=rows, headers=auth(token))
    assert r.status_code == 207
    body = r.json()
    assert body["created"] == 2 and body["rejected"] == 1 and body["stored"] is True
    assert body["errors"][0]["row"] == 2 and body["errors"][0]["field"] == "currency"
    assert body["item_ids"][1] == 0
    assert session.scalar(select(func.count()).select_from(Item)) == 2


def test_batch_limit_and_garbage(client, make_user, settings):
    _, token = make_user("ana", "analyst")
    too_many = [item_row(i) for i in range(settings.max_ingest_batch + 1)]
    r = client.post("/api/v1/items", json=too_many, headers=auth(token))
    assert r.status_code == 422 and "at most" in r.json()["message"]
    r = client.post("/api/v1/items", content=b"{not json", headers={
        **auth(token), "content-type": "application/json"})
    assert r.status_code == 422 and "message" in r.json()
    r = client.post("/api/v1/items", json=["x", 3], headers=auth(token))
    assert r.status_code == 422
    assert [e["row"] for e in r.json()["details"]["errors"]] == [1, 2]


def test_golden_needs_a_known_label(client, make_user):
    _, token = make_user("ana", "analyst")
    r = client.post("/api/v1/items", json=[item_row(1, is_golden=True)], headers=auth(token))
    assert r.status_code == 422
    r = client.post("/api/v1/items", json=[item_row(1, golden_label="awful")],
                    headers=auth(token))
    assert r.status_code == 422 and "unknown label" in r.text
    r = client.post("/api/v1/items", json=[item_row(1, golden_label="adult")],
                    headers=auth(token))
    assert r.status_code == 200


def test_item_detail_shows_status_and_history(client, make_user):
    _, token = make_user("ana", "analyst")
    ids = client.post("/api/v1/items", json=[item_row(1)], headers=auth(token)).json()["item_ids"]
    r = client.get(f"/api/v1/items/{ids[0]}", headers=auth(token))
    assert r.status_code == 200
    assert r.json()["status"]["state"] == "queued" and r.json()["history"] == []
    assert client.get("/api/v1/items/999999", headers=auth(token)).status_code == 404
    r = client.get("/api/v1/items/by-key/shop/X1", headers=auth(token))
    assert r.json()["id"] == ids[0]


def test_bulk_jobs_refresh_planner_statistics(db_url, policy):
    """After a bulk load into fresh tables, PostgreSQL's planner still plans for empty tables
    (read the (source, external_id) index by source alone, filter the rest); ``quorum
    ingest`` refreshes the statistics between batches (bench/ingest.py: 738 → 2,783 items/s
    over 100,000 items, flat instead of falling from 2,100 to 450)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("planner statistics are PostgreSQL's; on SQLite this is a no-op")
    from sqlalchemy import text

    from backend.db import BULK_TABLES, dispose_engines, refresh_statistics, session_scope
    from backend.items.service import ingest
    from backend.migrate import upgrade
    from tests.pg import create_database, drop_database, server_url

    url = create_database(server_url(), prefix="quorum_stats")
    try:
        upgrade(url)
        with session_scope(url) as s:
            ingest(session=s, rows=[item_row(i) for i in range(2000)], policy=policy)

        def estimated_items() -> float:
            with session_scope(url) as s:
                return s.execute(text("select reltuples from pg_class where relname = 'items'")
                                 ).scalar_one()

        assert estimated_items() <= 0  # never analysed: the planner knows nothing
        refresh_statistics(url)
        assert estimated_items() == 2000
        with session_scope(url) as s:
            analysed = set(s.execute(text(
                "select relname from pg_stat_user_tables where last_analyze is not null")
            ).scalars())
        assert set(BULK_TABLES) <= analysed
    finally:
        dispose_engines()
        drop_database(server_url(), url)


def test_ingest_stores_awkward_content_exactly(client, make_user, session):
    """On PostgreSQL new items go in through COPY (``db.copy_rows``): tabs, newlines,
    backslashes, quotes, non-ASCII and nested metadata come back as sent, with the same
    defaults and content hash as a Core insert gives."""
    _, token = make_user("ana", "analyst")
    title = "tab\there\nnew line \\N back\\slash \"quoted\" ,comma; Zürich 東京 🙂"
    meta = {"a": [1, 2.5, None, True], "b": {"c": "x\ty\n\\"}, "e": ""}
    rows = [item_row(1, title=title, description="\\.", metadata=meta),
            item_row(2, image=None, price=None)]
    r = client.post("/api/v1/items?wait=false", json=rows, headers=auth(token))
    assert r.status_code == 200, r.text
    assert r.json()["states"] == ["received", "received"]
    again = client.post("/api/v1/items?wait=false", json=rows, headers=auth(token)).json()
    assert again["unchanged"] == 2 and again["created"] == 0  # same content hash
    first, second = (session.get(Item, i) for i in r.json()["item_ids"])
    assert (first.title, first.description, first.metadata_) == (title, "\\.", meta)
    assert second.metadata_ == {} and second.price is None and second.is_golden is False
    assert first.created_at.tzinfo is not None and first.created_at == first.updated_at
    assert session.scalar(select(func.count()).select_from(ItemStatus)) == 2


def test_key_lookup_probes_the_index_without_fresh_statistics(db_url, policy):
    """Ingest's ``(source, external_id)`` lookup on PostgreSQL is one index probe per key
    even when the table grew since its last ANALYZE (as in a burst through the API, where
    nothing refreshes the statistics): before, the planner read the index by source alone
    and filtered every item of the source on each lookup, so acceptance slowed down as the
    table grew (bench/ingest_accept.py)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL plan")
    from sqlalchemy import text

    from backend.db import dispose_engines, session_scope
    from backend.items.service import _EXISTING_PG, ingest
    from backend.migrate import upgrade
    from tests.pg import create_database, drop_database, server_url

    url = create_database(server_url(), prefix="quorum_probe")
    try:
        upgrade(url)
        with session_scope(url) as s:
            ingest(session=s, rows=[item_row(i) for i in range(3000)], policy=policy)
        with session_scope(url) as s:
            source = s.scalar(text("select source from items limit 1"))
            keys = [f"nope{i}" for i in range(300)] + [
                s.scalar(text("select external_id from items order by id desc limit 1"))]
            plan = "\n".join(s.execute(text("EXPLAIN (ANALYZE, FORMAT TEXT) "
                                            + _EXISTING_PG.text),
                                       {"source": source, "ext": keys}).scalars())
            found = s.execute(_EXISTING_PG, {"source": source, "ext": keys}).all()
        assert len(found) == 1
        assert "Rows Removed by Filter" not in plan, plan
        assert "external_id)::text = k.ext" in plan, plan
    finally:
        dispose_engines()
        drop_database(server_url(), url)
