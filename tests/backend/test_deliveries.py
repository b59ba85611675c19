"""Decisions delivered: signed webhooks through a flaky loopback receiver, the dead-letter
list, and the cursor feed read while decisions keep coming."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from backend.db import get_sessionmaker, session_scope, utcnow
from backend.decisions.models import DecisionEvent
from backend.decisions.service import NewDecision, record_decisions
from backend.deliveries import service
from backend.deliveries.models import WebhookDelivery
from backend.deliveries.settings import DeliverySettings
from backend.items.service import ingest
from tests.conftest import auth, item_row

LABELS = ["ok", "restricted", "adult", "prohibited", "fraud"]


class Receiver:
    """A webhook receiver on loopback that fails ``fail_rate`` of the calls (HTTP 500) and
    can be taken down (connections refused) and brought back on the same port."""

    def __init__(self, fail_rate: float, seed: int = 1) -> None:
        self.fail_rate = fail_rate
        self.rng = random.Random(seed)
        self.calls: list[dict] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        self.up()

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    fail = receiver.rng.random() < receiver.fail_rate
                    receiver.calls.append({"key": self.headers["Idempotency-Key"],
                                           "signature": self.headers["X-Quorum-Signature"],
                                           "body": body, "ok": not fail})
                self.send_response(500 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def _decide(policy, n: int, start: int = 0) -> list[int]:  # noqa: ANN001
    with session_scope() as s:
        _, ids = ingest(session=s, rows=[item_row(start + i) for i in range(n)], policy=policy,
                        now=utcnow())
        return record_decisions(session=s, decisions=[
            NewDecision(item_id=i, label=LABELS[i % len(LABELS)], source="moderator")
            for i in ids])


def _subscribe(url: str, **kw) -> tuple[int, str]:  # noqa: ANN003
    with session_scope() as s:
        sub = service.create_subscription(session=s, url=url, **kw)
        return sub.id, sub.secret


def test_flaky_receiver_gets_every_decision_signed_with_stable_keys(settings, policy):
    receiver = Receiver(fail_rate=0.3)
    sub_id, secret = _subscribe(receiver.url)
    cfg = DeliverySettings(backoff_base_seconds=0, backoff_max_seconds=0, max_attempts=50,
                           batch_size=16)
    sessions = get_sessionmaker(settings.resolved_database_url)
    events = _decide(policy, 30)
    receiver.down()  # down for a while: every call refused
    out = service.run_deliveries(sessions=sessions, cfg=cfg, policy=policy)
    assert out["fed"] == 30 and out["delivered"] == 0 and out["failed"] == 30
    receiver.up()
    events += _decide(policy, 20, start=100)  # more decisions while it recovers
    for _ in range(60):
        service.run_deliveries(sessions=sessions, cfg=cfg, policy=policy)
        with session_scope() as s:
            left = s.scalar(select(func.count()).select_from(WebhookDelivery)
                            .where(WebhookDelivery.state != "delivered"))
        if not left:
            break
    assert left == 0
    receiver.down()
    delivered = {c["key"] for c in receiver.calls if c["ok"]}
    assert delivered == {str(e) for e in events}, "every decision delivered at least once"
    assert any(not c["ok"] for c in receiver.calls)
    by_key: dict[str, set[bytes]] = {}
    for c in receiver.calls:
        expected = "sha256=" + hmac.new(secret.encode(), c["body"], hashlib.sha256).hexdigest()
        assert c["signature"] == expected
        payload = json.loads(c["body"])
        assert str(payload["event_id"]) == c["key"]  # idempotency key = the event id
        by_key.setdefault(c["key"], set()).add(c["body"])
    assert all(len(bodies) == 1 for bodies in by_key.values()), "a retry is the same delivery"
    first = json.loads(next(c["body"] for c in receiver.calls))
    assert {"label", "decided_by", "policy_version", "reasons", "item"} <= set(first)
    assert sub_id


def test_subscriptions_filter_by_source_and_label(settings, policy):
    receiver = Receiver(fail_rate=0.0)
    _subscribe(receiver.url, labels=["prohibited"])
    _subscribe(receiver.url, sources=["elsewhere"])
    events = _decide(policy, 10)
    service.run_deliveries(sessions=get_sessionmaker(), cfg=DeliverySettings(),
                           policy=policy)
    receiver.down()
    with session_scope() as s:
        prohibited = set(s.scalars(select(DecisionEvent.id).where(
            DecisionEvent.id.in_(events), DecisionEvent.label == "prohibited")))
    assert prohibited and {int(c["key"]) for c in receiver.calls} == prohibited


def test_dead_letters_are_listed_and_replayed_by_admins(settings, policy, client, make_user):
    receiver = Receiver(fail_rate=1.0)
    _subscribe(receiver.url)
    events = _decide(policy, 3)
    cfg = DeliverySettings(backoff_base_seconds=0, backoff_max_seconds=0, max_attempts=2)
    sessions = get_sessionmaker()
    for _ in range(3):
        service.run_deliveries(sessions=sessions, cfg=cfg, policy=policy)
    _, admin = make_user("root", "admin")
    dead = client.get("/api/v1/webhooks/dead", headers=auth(admin)).json()
    assert sorted(d["event_id"] for d in dead) == events
    assert all(d["attempts"] == 2 and d["last_status"] == 500 for d in dead)
    receiver.fail_rate = 0.0
    r = client.post("/api/v1/webhooks/dead/replay", json={"ids": None}, headers=auth(admin))
    assert r.json() == {"replayed": 3}
    service.run_deliveries(sessions=sessions, cfg=cfg, policy=policy)
    receiver.down()
    assert {int(c["key"]) for c in receiver.calls if c["ok"]} == set(events)
    assert client.get("/api/v1/webhooks/dead", headers=auth(admin)).json() == []
    _, ana = make_user("ana", "analyst")
    assert client.get("/api/v1/webhooks/dead", headers=auth(ana)).status_code == 403


def test_webhook_api_creates_with_a_secret_shown_once_and_refuses_bad_input(client,
                                                                          make_user):
    _, admin = make_user("root", "admin")
    r = client.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/x",
                                              "labels": ["fraud"]}, headers=auth(admin))
    assert r.status_code == 201 and len(r.json()["secret"]) == 64
    listed = client.get("/api/v1/webhooks", headers=auth(admin)).json()
    assert listed[0]["labels"] == ["fraud"] and "secret" not in listed[0]
    r = client.post("/api/v1/webhooks", json={"url": "ftp://x"}, headers=auth(admin))
    assert r.status_code == 422 and "http(s)" in r.json()["message"]
    r = client.post("/api/v1/webhooks", json={"url": "http://x/", "labels": ["nope"]},
                    headers=auth(admin))
    assert r.status_code == 422 and "unknown label" in r.json()["message"]
    r = client.get("/api/v1/decisions?limit=100000", headers=auth(admin))
    assert r.status_code == 422


def _page_all(client, token: str, limit: int, seen: list[int], cursor: int) -> int:  # noqa: ANN001
    while True:
        r = client.get(f"/api/v1/decisions?after={cursor}&limit={limit}", headers=auth(token))
        assert r.status_code == 200, r.text
        page = r.json()
        seen.extend(e["event_id"] for e in page["events"])
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return cursor


def test_feed_returns_every_event_exactly_once_while_decisions_keep_coming(
        settings, policy, client, make_user):
    _, token = make_user("ana", "analyst")
    written: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set() and n < 40:
            written.extend(_decide(policy, 3, start=1000 + n * 3))
            n += 1

    t = threading.Thread(target=writer)
    t.start()
    seen: list[int] = []
    cursor = 0
    try:
        while t.is_alive():
            cursor = _page_all(client, token, 7, seen, cursor)
    finally:
        stop.set()
        t.join()
    _page_all(client, token, 7, seen, cursor)
    assert len(seen) == len(set(seen)), "no event twice"
    assert sorted(seen) == sorted(written), "no event missed"


def test_feed_serves_an_event_that_commits_after_a_later_one(settings, policy, client,
                                                             make_user):
    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: its events commit in id order")
    _, token = make_user("ana", "analyst")
    with session_scope() as s:
        _, (a, b) = ingest(session=s, rows=[item_row(1), item_row(2)], policy=policy,
                           now=utcnow())
    sessions = get_sessionmaker()
    slow = sessions()
    [early] = record_decisions(session=slow, decisions=[
        NewDecision(item_id=a, label="ok", source="moderator")])  # open, not committed
    with session_scope() as s:
        [late] = record_decisions(session=s, decisions=[
            NewDecision(item_id=b, label="fraud", source="moderator")])
    assert early < late
    seen: list[int] = []
    cursor = _page_all(client, token, 10, seen, 0)
    assert seen == [late]  # the consumer's cursor is now past `late`
    slow.commit()
    slow.close()
    _page_all(client, token, 10, seen, cursor)
    assert seen == [late, early], "the event committed late is not lost behind the cursor"


def test_webhook_body_and_feed_event_carry_the_statement_of_reasons(settings, policy, client,
                                                                   make_user):
    """Issue 11 item 5 / issue 14: each delivery of a restricting decision carries its
    statement of reasons, the same one ``GET /decisions/{id}/statement`` serves."""
    from backend.rules.schemas import RuleCreate
    from backend.rules.service import create_rule

    moderator_id, _ = make_user("mod", "moderator")
    _, token = make_user("ana", "analyst")
    receiver = Receiver(fail_rate=0.0)
    _subscribe(receiver.url)
    with session_scope() as s:
        rule = create_rule(session=s, policy=policy, data=RuleCreate(
            name="cheap", expression="has(item.price) && item.price < 1.0", action="decide",
            label="fraud")).id
        _, ids = ingest(session=s, rows=[item_row(i) for i in range(5)], policy=policy,
                        now=utcnow())
        events = record_decisions(session=s, decisions=[
            NewDecision(item_id=ids[0], label="fraud", source="rule", rule_id=rule,
                        rule_version=1),
            NewDecision(item_id=ids[1], label="prohibited", source="classifier",
                        model_id="lr-text-7", threshold_set_version=3, confidence=0.97),
            NewDecision(item_id=ids[2], label="adult", source="similarity",
                        similar_item_id=ids[1], distance=0.04),
            NewDecision(item_id=ids[3], label="restricted", source="moderator",
                        user_id=moderator_id, comment="replica"),
            NewDecision(item_id=ids[4], label="ok", source="moderator", user_id=moderator_id),
        ])
    service.run_deliveries(sessions=get_sessionmaker(), cfg=DeliverySettings(), policy=policy)
    receiver.down()
    bodies = {int(c["key"]): json.loads(c["body"]) for c in receiver.calls}
    feed = {e["event_id"]: e for e in client.get("/api/v1/decisions?limit=100",
                                                 headers=auth(token)).json()["events"]}
    assert set(bodies) == set(feed) == set(events)
    *restricting, ok = events
    for event_id in restricting:
        served = client.get(f"/api/v1/decisions/{event_id}/statement", headers=auth(token))
        assert served.status_code == 200, served.text
        assert bodies[event_id]["statement_of_reasons"] == served.json()
        assert feed[event_id]["statement_of_reasons"] == served.json()
    rule_sor, clf_sor, sim_sor, mod_sor = (bodies[e]["statement_of_reasons"] for e in restricting)
    assert rule_sor["facts"]["rule"] == {"id": rule, "name": "cheap", "version": 1}
    assert rule_sor["automated_decision"] is True and "absurd price" in rule_sor["policy_text"]
    assert clf_sor["facts"]["model"] == "lr-text-7"
    assert clf_sor["facts"]["threshold_set_version"] == 3
    assert sim_sor["facts"]["reused_item_id"] == ids[1]
    assert mod_sor["automated_decision"] is False and mod_sor["facts"]["moderator"] == "mod"
    assert f"/api/v1/items/{ids[3]}/appeals" in mod_sor["how_to_appeal"]
    # a decision that restricts nothing has no statement (and the API says 404)
    assert bodies[ok]["statement_of_reasons"] is None
    assert feed[ok]["statement_of_reasons"] is None
    assert client.get(f"/api/v1/decisions/{ok}/statement",
                      headers=auth(token)).status_code == 404
