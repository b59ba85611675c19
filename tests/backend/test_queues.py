import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from backend.db import get_sessionmaker, utcnow
from backend.decisions.models import DecisionEvent, ItemStatus
from backend.errors import LeaseLost
from backend.items.service import ingest
from backend.queues import service as queues
from backend.queues.models import Queue, Task
from backend.queues.work import submit_verdict
from backend.users.models import User
from backend.users.service import create_user
from tests.conftest import auth, item_row


def _items(session, policy, n, **over):
    _, ids = ingest(session=session, rows=[item_row(i, **over) for i in range(n)],
                    policy=policy)
    return ids


def test_queue_names_and_chunking(session, settings, policy, monkeypatch):
    monkeypatch.setattr(settings, "queue_chunk_size", 4)
    ids = _items(session, policy, 10)
    now = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    queues.enqueue(session=session, kind="NEW_PRODUCTS", item_ids=ids, now=now,
                   settings=settings)
    queues.enqueue(session=session, kind="ML_GOOD", item_ids=ids[:6], now=now,
                   settings=settings)
    rows = {q.name: (q.total, q.priority, q.audience) for q in session.scalars(select(Queue))}
    assert rows == {
        "NEW_PRODUCTS_2026-11-24_1": (4, 57, "crowd"),
        "NEW_PRODUCTS_2026-11-24_2": (4, 57, "crowd"),
        "NEW_PRODUCTS_2026-11-24_3": (2, 57, "crowd"),
        "ML_GOOD_2026-11-24": (4, 91, "crowd"),
        "ML_GOOD_2026-11-24_2": (2, 91, "crowd"),
    }
    # enqueueing again does not duplicate open tasks
    assert queues.enqueue(session=session, kind="ML_GOOD", item_ids=ids[:6], now=now,
                          settings=settings) == []


def _moderator(session, name, kinds):
    return create_user(session=session, username=name, role="moderator", queue_kinds=kinds)


def test_lease_priority_grants_and_idempotence(session, settings, policy):
    ids = _items(session, policy, 6)
    now = utcnow()
    queues.enqueue(session=session, kind="MANUAL", item_ids=ids[:3], now=now, settings=settings)
    queues.enqueue(session=session, kind="ML_BAD_HIGH", item_ids=ids[3:], now=now,
                   settings=settings)
    mod = _moderator(session, "m", ["MANUAL", "ML_BAD_HIGH"])
    only_manual = _moderator(session, "n", ["MANUAL"])
    t = queues.lease_next(session=session, user=mod, now=now, settings=settings)
    assert t.queue.kind == "ML_BAD_HIGH" and t.item_id == ids[3]  # priority 90 beats 50
    again = queues.lease_next(session=session, user=mod, now=now, settings=settings)
    assert again.id == t.id  # a retried lease returns the held task
    t2 = queues.lease_next(session=session, user=only_manual, now=now, settings=settings)
    assert t2.queue.kind == "MANUAL"
    nobody = _moderator(session, "z", [])
    assert queues.lease_next(session=session, user=nobody, now=now, settings=settings) is None


def test_expired_lease_returns_the_task(session, settings, policy):
    ids = _items(session, policy, 1)
    now = utcnow()
    queues.enqueue(session=session, kind="MANUAL", item_ids=ids, now=now, settings=settings)
    a = _moderator(session, "a", ["MANUAL"])
    b = _moderator(session, "b", ["MANUAL"])
    t = queues.lease_next(session=session, user=a, now=now, settings=settings,
                          lease_seconds=60)
    assert queues.lease_next(session=session, user=b, now=now, settings=settings) is None
    later = now + timedelta(seconds=61)
    t_b = queues.lease_next(session=session, user=b, now=later, settings=settings)
    assert t_b is not None and t_b.id == t.id and t_b.lease_owner_id == b.id
    assert t_b.lease_count == 2
    with pytest.raises(LeaseLost):
        submit_verdict(session=session, task_id=t.id, user=a, label="ok", policy=policy,
                       now=later)


def test_expired_but_untaken_lease_still_accepts_the_work(session, settings, policy):
    ids = _items(session, policy, 1)
    now = utcnow()
    queues.enqueue(session=session, kind="MANUAL", item_ids=ids, now=now, settings=settings)
    a = _moderator(session, "a", ["MANUAL"])
    t = queues.lease_next(session=session, user=a, now=now, settings=settings, lease_seconds=60)
    later = now + timedelta(minutes=5)
    assert queues.expire_leases(session=session, now=later) == 1
    res = submit_verdict(session=session, task_id=t.id, user=a, label="ok", policy=policy,
                         now=later)
    assert res.task.state == "done"


def test_verdict_records_decision_and_progress_and_is_retry_safe(session, settings, policy):
    ids = _items(session, policy, 2)
    now = utcnow()
    queues.enqueue(session=session, kind="MANUAL", item_ids=ids, now=now, settings=settings)
    a = _moderator(session, "a", ["MANUAL"])
    t = queues.lease_next(session=session, user=a, now=now, settings=settings)
    r1 = submit_verdict(session=session, task_id=t.id, user=a, label="adult", policy=policy,
                        now=now, time_spent_ms=4200, comment="lace")
    r2 = submit_verdict(session=session, task_id=t.id, user=a, label="adult", policy=policy,
                        now=now)
    assert r2.replayed and r2.judgment_id == r1.judgment_id and r2.event_id == r1.event_id
    assert len(session.scalars(select(DecisionEvent).where(
        DecisionEvent.item_id == t.item_id)).all()) == 1
    status = session.get(ItemStatus, t.item_id)
    assert (status.state, status.label, status.source, status.is_human) == (
        "decided", "adult", "moderator", True)
    row = queues.queue_row(session=session, queue=session.get(Queue, t.queue_id))
    assert (row.done, row.queue.total, row.progress) == (1, 2, "1 / 2")
    with pytest.raises(Exception, match="unknown label"):
        submit_verdict(session=session, task_id=t.id + 1, user=a, label="nope",
                       policy=policy, now=now)


def test_skip_and_release(session, settings, policy):
    ids = _items(session, policy, 2)
    now = utcnow()
    queues.enqueue(session=session, kind="MANUAL", item_ids=ids, now=now, settings=settings)
    a = _moderator(session, "a", ["MANUAL"])
    t1 = queues.lease_next(session=session, user=a, now=now, settings=settings)
    queues.release(session=session, task=t1, user=a, now=now, skip=True)
    t2 = queues.lease_next(session=session, user=a, now=now, settings=settings)
    assert t2.id != t1.id  # a skipped task is not offered to the same moderator again
    queues.release(session=session, task=t2, user=a, now=now)
    t3 = queues.lease_next(session=session, user=a, now=now, settings=settings)
    assert t3.id == t2.id  # a released one is
    b = _moderator(session, "b", ["MANUAL"])
    assert queues.lease_next(session=session, user=b, now=now, settings=settings).id == t1.id


def test_human_decision_supersedes_automatic_never_the_reverse(session, policy):
    from backend.decisions.service import NewDecision, record_decisions

    [item] = _items(session, policy, 1)
    e1, = record_decisions(session=session, decisions=[
        NewDecision(item_id=item, label="ok", source="classifier", model_id="m1")])
    e2, = record_decisions(session=session, decisions=[
        NewDecision(item_id=item, label="adult", source="moderator")])
    e3, = record_decisions(session=session, decisions=[
        NewDecision(item_id=item, label="ok", source="similarity")])
    status = session.get(ItemStatus, item)
    assert (status.label, status.event_id) == ("adult", e2)
    events = {e.id: e for e in session.scalars(select(DecisionEvent))}
    assert events[e2].supersedes_id == e1
    assert events[e3].details["status_unchanged"] and events[e3].supersedes_id is None
    assert len(events) == 3  # nothing deleted


@pytest.mark.parametrize("threads", [8])
def test_concurrent_leasing_every_task_exactly_once(settings, policy, threads, db_url):
    """8 moderators lease until the queue is empty: no task twice, none lost."""
    factory = get_sessionmaker(db_url)
    with factory.begin() as s:
        _, ids = ingest(session=s, rows=[item_row(i) for i in range(120)], policy=policy)
        queues.enqueue(session=s, kind="MANUAL", item_ids=ids, now=utcnow(), settings=settings)
        users = [create_user(session=s, username=f"m{i}", role="moderator",
                             queue_kinds=["MANUAL"]).id for i in range(threads)]
    done: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def work(user_id: int) -> None:
        try:
            barrier.wait()
            while True:
                with factory.begin() as s:
                    user = s.get(User, user_id)
                    task = queues.lease_next(session=s, user=user, now=utcnow(),
                                             settings=settings)
                    if task is None:
                        return
                    submit_verdict(session=s, task_id=task.id, user=user, label="ok",
                                   policy=policy, now=utcnow())
                    with lock:
                        done.append((task.id, user_id))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    assert not errors, errors[:3]
    counts = Counter(task_id for task_id, _ in done)
    assert len(counts) == 120 and max(counts.values()) == 1
    with factory() as s:
        states = Counter(s.scalars(select(Task.state)).all())
        assert states == {"done": 120}
        assert queues.list_queues(session=s)[0].progress == "120 / 120"
    if db_url.startswith("postgresql"):
        # SKIP LOCKED lets moderators work side by side (SQLite serialises the writers,
        # so there one thread may legitimately take every task)
        assert len({u for _, u in done}) > 1


def test_http_lease_verdict_flow(client, make_user):
    _, admin = make_user("root", "admin")
    _, mod = make_user("mo", "moderator", ["MANUAL"])
    ids = client.post("/api/v1/items", json=[item_row(1, is_new=False)],
                      headers=auth(admin)).json()["item_ids"]
    r = client.post("/api/v1/tasks/lease", headers=auth(mod))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"]["queue_kind"] == "MANUAL" and body["item"]["id"] == ids[0]
    tid = body["task"]["id"]
    r = client.post(f"/api/v1/tasks/{tid}/verdict", json={"label": "zzz"}, headers=auth(mod))
    assert r.status_code == 422 and "unknown label" in r.json()["message"]
    r = client.post(f"/api/v1/tasks/{tid}/verdict", json={"label": "ok", "time_spent_ms": 900},
                    headers=auth(mod))
    assert r.status_code == 200 and r.json()["event_id"]
    r = client.post(f"/api/v1/tasks/{tid}/verdict", json={"label": "adult"}, headers=auth(mod))
    assert r.status_code == 409
    r = client.post("/api/v1/tasks/lease", headers=auth(mod))
    assert r.json()["task"] is None and r.json()["message"]
    detail = client.get(f"/api/v1/items/{ids[0]}", headers=auth(mod)).json()
    assert detail["status"]["label"] == "ok"
    assert [h["source"] for h in detail["history"]] == ["moderator"]
    queues_ = client.get("/api/v1/queues", headers=auth(mod)).json()
    assert [(q["name"].startswith("MANUAL_"), q["progress"]) for q in queues_] == [
        (True, "1 / 1")]


def _work_through(session, mod, now, settings) -> list[int]:  # noqa: ANN001
    """Lease and finish tasks as ``mod`` until none is left; the items in lease order."""
    got = []
    while (t := queues.lease_next(session=session, user=mod, now=now,
                                  settings=settings)) is not None:
        got.append(t.item_id)
        queues.finish_leased(session=session, task=t, user=mod, now=now)
    return got


def test_moderators_take_the_likeliest_flip_first_within_a_queue(session, settings, policy,
                                                                  monkeypatch):
    """Within a queue the task whose decision is likeliest to flip (the lowest top
    probability of the classifier; 0.5 never scored) is leased first, oldest among equals; a
    higher-priority queue still comes first. ``QUORUM_MODERATOR_ORDER=oldest``: id order."""
    ids = _items(session, policy, 6)
    now = utcnow()
    sure, unsure, never, middling, also_never = ids[:5]
    sureness = {sure: queues.top_probability({"ok": 0.99, "prohibited": 0.01}),
                unsure: queues.top_probability({"ok": 0.55, "prohibited": 0.45}),
                middling: queues.top_probability({"ok": 0.7, "prohibited": 0.3})}
    assert sureness[sure] == pytest.approx(0.99) and queues.top_probability(None) == 0.5
    queues.enqueue(session=session, kind="MANUAL", item_ids=ids[:5], now=now,
                   settings=settings, confidences=sureness)
    queues.enqueue(session=session, kind="ML_BAD_HIGH", item_ids=ids[5:], now=now,
                   settings=settings, confidences={ids[5]: 1.0})
    mod = _moderator(session, "m", ["MANUAL", "ML_BAD_HIGH"])

    assert _work_through(session, mod, now, settings) == [ids[5], never, also_never, unsure,
                                                          middling, sure]
    session.rollback()
    ids = _items(session, policy, 3)
    queues.enqueue(session=session, kind="MANUAL", item_ids=ids, now=now, settings=settings,
                   confidences={ids[0]: 1.0, ids[1]: 0.6, ids[2]: 0.8})
    mod = _moderator(session, "m", ["MANUAL"])
    monkeypatch.setattr(settings, "moderator_order", "oldest")
    assert _work_through(session, mod, now, settings) == ids


def test_routing_records_how_unsure_the_classifier_was(session, settings, policy, ml_on):
    from backend.items.models import ItemScore
    from backend.ml_adapter.service import train
    from tests.backend.conftest import route_rows
    from tests.backend.test_shadow import _labelled

    _labelled(session, settings, policy, 24)
    train(session=session)
    ids, _ = route_rows(session, settings, policy, [
        item_row(500, title="Cannabis seeds strain X"), item_row(501, title="Cotton t-shirt M")])
    for item_id in ids:
        scores = session.scalar(select(ItemScore.scores).where(ItemScore.item_id == item_id)
                                .order_by(ItemScore.id.desc()).limit(1))
        task = session.scalar(select(Task).where(Task.item_id == item_id))
        assert task is not None and scores
        assert task.confidence == pytest.approx(max(scores.values()))
        assert task.confidence > 0.5  # a trained model is surer than a coin on these


def test_enqueue_reads_the_newest_classifier_score_and_lease_takes_the_likeliest_flip(
        session, settings, policy, monkeypatch):
    """No ``confidences`` passed (the crowd's ``CROWD_DISAGREE``, appeals, spot checks):
    enqueue reads each item's newest ``ItemScore`` itself. Items scored 0.99 (sure), 0.55
    (unsure) and never: flip values 0.01, 0.45, 0.5, so never-scored first, then unsure,
    sure last; a higher-priority queue's sure task still comes first; queues tied on
    priority are one group ordered by value; a pair task gets 0.5 whatever its item's score.
    ``QUORUM_MODERATOR_ORDER=oldest``: id order."""
    from datetime import timedelta

    from backend.items.models import ItemScore

    ids = _items(session, policy, 7)
    now = utcnow()
    sure, unsure, never, urgent_sure, tied_unsure, was_unsure, paired = ids

    def score(item_id, top, at):
        session.add(ItemScore(item_id=item_id, model_id="m1", threshold_set_version=None,
                              scores={"ok": top, "prohibited": round(1 - top, 6)},
                              created_at=at))

    for item_id, top in ((sure, 0.99), (unsure, 0.55), (urgent_sure, 0.99),
                         (tied_unsure, 0.6), (paired, 0.99)):
        score(item_id, top, now)
    score(was_unsure, 0.52, now - timedelta(days=1))  # newest wins: sure now
    score(was_unsure, 0.97, now)
    session.flush()
    queues.enqueue(session=session, kind="MANUAL", item_ids=[sure, unsure, never, was_unsure],
                   now=now, settings=settings)
    queues.enqueue(session=session, kind="ML_BAD_HIGH", item_ids=[urgent_sure], now=now,
                   settings=settings)
    queues.enqueue(session=session, kind="OTHER_FIFTY", item_ids=[tied_unsure], now=now,
                   settings=settings)  # priority 50, as MANUAL: one group
    [pair] = queues.enqueue(session=session, kind="PAIRS", item_ids=[paired], now=now,
                            settings=settings, task_type="pair",
                            payloads=[{"other_item_id": sure}], priority=10)
    got = dict(session.execute(select(Task.item_id, Task.confidence)
                               .where(Task.task_type == "item")).tuples().all())
    assert got == pytest.approx({sure: 0.99, unsure: 0.55, never: 0.5, was_unsure: 0.97,
                                 urgent_sure: 0.99, tied_unsure: 0.6})
    assert session.get(Task, pair).confidence == 0.5
    mod = _moderator(session, "m", ["MANUAL", "ML_BAD_HIGH", "OTHER_FIFTY", "PAIRS"])

    savepoint = session.begin_nested()
    assert _work_through(session, mod, now, settings) == [
        urgent_sure, never, unsure, tied_unsure, was_unsure, sure, paired]
    savepoint.rollback()
    monkeypatch.setattr(settings, "moderator_order", "oldest")
    assert _work_through(session, mod, now, settings) == [
        urgent_sure, sure, unsure, never, was_unsure, tied_unsure, paired]


def test_a_waiting_task_takes_its_items_new_score(settings, policy):
    """Routed again (re-scored) while its task waits: the task is not doubled and its
    confidence is the new score, so the moderators' order follows the newest score."""
    now = utcnow()
    with get_sessionmaker()() as s, s.begin():
        _, ids = ingest(session=s, rows=[item_row(i, external_id=f"R{i}") for i in range(3)],
                        policy=policy, now=now)
        queues.enqueue(session=s, kind="ML_BAD_MIDDLE", item_ids=ids, now=now,
                       settings=settings, confidences=dict.fromkeys(ids, 0.6))
        again = queues.enqueue(session=s, kind="ML_BAD_MIDDLE", item_ids=ids[:2], now=now,
                               settings=settings, confidences={ids[0]: 0.95, ids[1]: 0.55})
        got = dict(s.execute(select(Task.item_id, Task.confidence)).tuples().all())
    assert again == [] and got == {ids[0]: 0.95, ids[1]: 0.55, ids[2]: 0.6}
