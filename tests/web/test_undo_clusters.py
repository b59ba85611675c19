"""Undo (a superseding event, never a deletion), cluster review that decides only what was
ticked, records time and can be undone, clusters by the similarity index's vectors, and
resized thumbnails."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import numpy as np
from PIL import Image
from sqlalchemy import select, update

from backend.crowdwork.models import Judgment
from backend.db import session_scope, utcnow
from backend.decisions.models import DecisionEvent, ItemStatus
from backend.items.models import ItemEmbedding
from backend.queues.models import Task
from tests.web.test_web import PASSWORD, _csrf, _queue, login

FETCH = {"X-Requested-With": "fetch"}


def _start(client, csrf: str) -> int:  # noqa: ANN001
    start = client.post("/work/start", data={"csrf": csrf}, follow_redirects=False)
    return int(re.match(r"/work/(\d+)", start.headers["location"]).group(1))


def _verdict(client, csrf, task_id, label):  # noqa: ANN001, ANN201
    resp = client.post(f"/work/{task_id}/verdict", data={"label": label, "csrf": csrf},
                       headers={"X-CSRF-Token": csrf, **FETCH})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_undo_last_verdict_supersedes_and_reopens_it(client, make_user, settings):
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    ids = _queue(settings, "MANUAL", 3)
    login(client, "mia")
    csrf = _csrf(client.get("/queues").text)
    first = _start(client, csrf)
    shown = _verdict(client, csrf, first, "fraud")["task_id"]
    resp = client.post("/work/undo", data={"current": shown},
                       headers={"X-CSRF-Token": csrf, **FETCH})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["task_id"] == first and body["undone_label"] == "fraud"
    assert "Item 0" in body["html"] and body["lease_left_s"] > 0
    url = settings.resolved_database_url
    with session_scope(url) as s:
        events = list(s.scalars(select(DecisionEvent).where(DecisionEvent.item_id == ids[0])
                                .order_by(DecisionEvent.id)))
        assert [e.source for e in events] == ["moderator", "undo"]  # nothing deleted
        assert events[1].supersedes_id == events[0].id
        assert events[1].details["undo_of"] == events[0].id
        status = s.get(ItemStatus, ids[0])
        assert (status.state, status.label, status.event_id) == ("queued", None, events[1].id)
        t = s.get(Task, first)
        assert (t.state, t.lease_count) == ("leased", 2)
        assert s.get(Task, shown).state == "pending"  # the card shown instead went back
        j = s.scalar(select(Judgment).where(Judgment.task_id == first))
        assert j.assignment_status == "WITHDRAWN"
    # answered again: a new verdict on a new attempt, superseding the undo (no fork)
    _verdict(client, csrf, first, "ok")
    with session_scope(url) as s:
        events = list(s.scalars(select(DecisionEvent).where(DecisionEvent.item_id == ids[0])
                                .order_by(DecisionEvent.id)))
        assert [e.source for e in events] == ["moderator", "undo", "moderator"]
        assert events[2].supersedes_id == events[1].id
        assert s.get(ItemStatus, ids[0]).label == "ok"
    page = client.get(f"/items/{ids[0]}").text
    assert "Decided fraud (undo)" in page and page.count("superseded") >= 2


def test_undo_is_refused_when_too_old_or_decided_since(client, make_user, settings):
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    ids = _queue(settings, "MANUAL", 2)
    login(client, "mia")
    csrf = _csrf(client.get("/queues").text)
    first = _start(client, csrf)
    _verdict(client, csrf, first, "fraud")
    url = settings.resolved_database_url
    with session_scope(url) as s:  # 20 minutes ago
        s.execute(update(DecisionEvent).where(DecisionEvent.task_id == first)
                  .values(created_at=utcnow() - timedelta(minutes=20)))
    old = client.post("/work/undo", headers={"X-CSRF-Token": csrf, **FETCH})
    assert old.status_code == 409 and "nothing to undo" in old.json()["message"]
    with session_scope(url) as s:
        s.execute(update(DecisionEvent).where(DecisionEvent.task_id == first)
                  .values(created_at=utcnow()))
        from backend.decisions.service import NewDecision, record_decisions

        record_decisions(session=s, decisions=[NewDecision(item_id=ids[0], label="ok",
                                                           source="crowd")])
    since = client.post("/work/undo", headers={"X-CSRF-Token": csrf, **FETCH})
    assert since.status_code == 409
    with session_scope(url) as s:
        assert s.get(ItemStatus, ids[0]).label == "ok"  # the crowd's decision stands
        assert s.scalar(select(DecisionEvent).where(DecisionEvent.source == "undo")) is None


def test_cluster_review_ticks_nothing_decides_ticked_records_time_and_undoes(
        client, make_user, settings):
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    _queue(settings, "MANUAL", 4, title="Replica watch")
    login(client, "mia")
    url = settings.resolved_database_url
    with session_scope(url) as s:
        tasks = list(s.scalars(select(Task).order_by(Task.id)))
        name = tasks[0].queue.name
        tids = [t.id for t in tasks]
    page = client.get(f"/queues/{name}")
    assert "4 items" in page.text and " checked" not in page.text  # nothing pre-ticked
    csrf = _csrf(page.text)
    none = client.post(f"/queues/{name}/clusters/decide",
                       data={"csrf": csrf, "label": "prohibited"}, follow_redirects=False)
    assert none.status_code == 303 and "none-ticked" in none.headers["location"]
    assert "Tick at least one item" in client.get(none.headers["location"]).text
    r = client.post(f"/queues/{name}/clusters/decide",
                    data={"csrf": csrf, "label": "prohibited", "time_spent_ms": "9000",
                          "task_ids": [str(i) for i in tids[:3]]}, follow_redirects=False)
    assert r.status_code == 303
    done = client.get(r.headers["location"]).text
    assert "3 items decided as <b>Prohibited" in done and "3.0 s per item" in done
    assert 'action="/queues/' in done and "Undo" in done
    with session_scope(url) as s:
        times = list(s.scalars(select(Judgment.time_spent_ms).order_by(Judgment.id)))
        assert times == [3000, 3000, 3000]
    events = re.search(r'name="events" value="([\d,]+)"', done).group(1)
    undo = client.post(f"/queues/{name}/clusters/undo", data={"csrf": csrf, "events": events},
                       follow_redirects=False)
    assert undo.status_code == 303 and "undone=3" in undo.headers["location"]
    with session_scope(url) as s:
        assert [s.get(Task, t).state for t in tids] == ["pending"] * 4
        assert s.scalar(select(DecisionEvent.id).where(DecisionEvent.source == "undo")
                        .limit(1)) is not None
        assert {st.state for st in s.scalars(select(ItemStatus))} == {"queued"}


def test_clusters_come_from_the_similarity_vectors(client, make_user, settings):
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    titles = ["Gold watch for men", "Elegant timepiece", "Luxury wrist clock",
              "Garden hose 20 m", "Kids bicycle"]
    ids = [_queue(settings, "MANUAL", 1, start=i, title=t)[0] for i, t in enumerate(titles)]
    rng = np.random.default_rng(0)
    base = rng.normal(size=16)
    vecs = [base + rng.normal(scale=0.01, size=16) for _ in range(3)]
    vecs += [rng.normal(size=16), rng.normal(size=16)]
    with session_scope(settings.resolved_database_url) as s:
        for item_id, v in zip(ids, vecs, strict=True):
            v = (v / np.linalg.norm(v)).astype(np.float32)
            s.add(ItemEmbedding(item_id=item_id, encoder_id="test-enc", dim=16,
                                vector=v.tobytes()))
        name = s.scalar(select(Task)).queue.name
    login(client, "mia")
    page = client.get(f"/queues/{name}").text
    assert "3 items · grouped by embedding" in page  # titles share no words
    assert "Garden hose" not in page.split("Near-duplicates")[1]


def test_thumbnails_are_small_jpegs(client, make_user, settings):
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    photos = settings.data_dir / "photos"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (900, 1200, 3), dtype=np.uint8)).save(
        photos / "big.png")
    (photos / "bad.jpg").write_bytes(b"not an image")
    ids = _queue(settings, "MANUAL", 1, image=str(photos / "big.png"))
    bad = _queue(settings, "MANUAL", 1, start=5, image=str(photos / "bad.jpg"))
    login(client, "mia")
    full = client.get(f"/items/{ids[0]}/image")
    thumb = client.get(f"/items/{ids[0]}/thumb?w=160")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(thumb.content))
    assert max(img.size) == 160 and img.size == (160, 120)
    assert len(thumb.content) * 20 < len(full.content)
    assert client.get(f"/items/{ids[0]}/thumb?w=50").status_code == 404
    assert client.get(f"/items/{bad[0]}/thumb").status_code == 404
    assert client.get(f"/items/{2**70}/thumb").status_code == 404
