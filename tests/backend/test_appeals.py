"""Appeals (APPEALS queue, never to the moderator who decided, upheld or reversed by a
superseding decision with reasons, feeding calibration and the reports) and statements of
reasons (served by the API, in the DSA Transparency Database's shape)."""

from __future__ import annotations

from sqlalchemy import select

from backend.appeals.models import Appeal
from backend.db import session_scope, utcnow
from backend.decisions.models import DecisionEvent, ItemStatus
from backend.decisions.service import NewDecision, record_decisions
from backend.items.service import ingest
from backend.policy import get_policy
from backend.queues import service as queues
from backend.queues.models import Queue, Task
from tests.conftest import auth, item_row


def _item(settings, i: int, label: str | None = None, source: str = "classifier",
          **over) -> int:  # noqa: ANN001
    with session_scope(settings.resolved_database_url) as s:
        _, [item_id] = ingest(session=s, rows=[item_row(i, **over)], policy=get_policy())
        if label:
            record_decisions(session=s, decisions=[NewDecision(
                item_id=item_id, label=label, source=source, model_id="lr-text-7",
                threshold_set_version=3, confidence=0.991)])
        return item_id


def test_appeal_is_idempotent_bounded_and_needs_a_decision(client, make_user, settings):
    _, platform = make_user("platform", "analyst")
    item = _item(settings, 1, "fraud")
    undecided = _item(settings, 2)
    body = {"reason": "The price is a real clearance sale.", "appellant": "seller-42",
            "external_ref": "ticket-9"}
    first = client.post(f"/api/v1/items/{item}/appeals", json=body, headers=auth(platform))
    assert first.status_code == 201, first.text
    again = client.post(f"/api/v1/items/{item}/appeals", json=body, headers=auth(platform))
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = client.post(f"/api/v1/items/{item}/appeals", json={"reason": "again"},
                        headers=auth(platform))
    assert other.status_code == 409 and "already has an open appeal" in other.json()["message"]
    none = client.post(f"/api/v1/items/{undecided}/appeals", json={"reason": "why"},
                       headers=auth(platform))
    assert none.status_code == 409 and "no decision" in none.json()["message"]
    big = client.post(f"/api/v1/items/{item}/appeals", json={"reason": "x" * 5001},
                      headers=auth(platform))
    assert big.status_code == 422
    assert client.post(f"/api/v1/items/{2**70}/appeals", json={"reason": "x"},
                       headers=auth(platform)).status_code == 422
    with session_scope(settings.resolved_database_url) as s:
        appeals = list(s.scalars(select(Appeal)))
        assert len(appeals) == 1 and appeals[0].state == "open"
        task = s.get(Task, appeals[0].task_id)
        assert task.queue.kind == "APPEALS" and task.state == "pending"


def test_appeal_skips_the_decider_and_reversal_is_a_labelled_error(client, make_user,
                                                                   settings):
    mia_id, mia = make_user("mia", "moderator", ["MANUAL", "APPEALS"])
    _, otto = make_user("otto", "moderator", ["APPEALS"])
    _, platform = make_user("platform", "analyst")
    item = _item(settings, 1)
    with session_scope(settings.resolved_database_url) as s:
        queues.enqueue(session=s, kind="MANUAL", item_ids=[item], now=utcnow(),
                       settings=settings)
    lease = client.post("/api/v1/tasks/lease", headers=auth(mia)).json()
    assert client.post(f"/api/v1/tasks/{lease['task']['id']}/verdict",
                       json={"label": "prohibited"}, headers=auth(mia)).status_code == 200
    opened = client.post(f"/api/v1/items/{item}/appeals",
                         json={"reason": "It is a legal replica.", "appellant": "s-1"},
                         headers=auth(platform)).json()
    # mia decided the item: the appeal is never offered to her
    mine = client.post("/api/v1/tasks/lease", headers=auth(mia))
    assert mine.status_code in (200, 204)
    assert not mine.content or (mine.json().get("task") or {}).get("id") != opened["task_id"]
    got = client.post("/api/v1/tasks/lease", headers=auth(otto)).json()
    assert got["task"]["id"] == opened["task_id"]
    done = client.post(f"/api/v1/tasks/{opened['task_id']}/verdict",
                       json={"label": "restricted", "comment": "A replica: restricted, "
                             "not prohibited."}, headers=auth(otto))
    assert done.status_code == 200, done.text
    appeal = client.get(f"/api/v1/appeals/{opened['id']}", headers=auth(platform)).json()
    assert appeal["state"] == "reversed"
    assert appeal["outcome_reasons"] == "A replica: restricted, not prohibited."
    with session_scope(settings.resolved_database_url) as s:
        status = s.get(ItemStatus, item)
        assert (status.label, status.is_human) == ("restricted", True)  # calibration's label
        outcome = s.get(DecisionEvent, appeal["outcome_event_id"])
        assert outcome.supersedes_id == appeal["event_id"]
        assert outcome.details["appeal_id"] == opened["id"]
        assert s.scalar(select(Queue.kind).join(Task, Task.queue_id == Queue.id)
                        .where(Task.id == opened["task_id"])) == "APPEALS"
    rates = {(r["source"], r["band"]): r for r in
             client.get("/api/v1/appeals/rates", headers=auth(platform)).json()}
    assert rates[("moderator", "")]["appealed"] == 1
    assert rates[("moderator", "")]["reversal_rate"] == 1.0
    # the threshold report lists the reversed appeal's item, linked to its item page
    page = client.get("/reports/thresholds?fresh=1", headers=auth(platform)).text
    assert f'<a href="/items/{item}">item {item}</a> <small>reversed, moderator prohibited' \
        in page


def test_upheld_when_the_same_label_is_given(client, make_user, settings):
    _, otto = make_user("otto", "moderator", ["APPEALS"])
    _, platform = make_user("platform", "analyst")
    item = _item(settings, 1, "fraud")
    opened = client.post(f"/api/v1/items/{item}/appeals", json={"reason": "not fraud"},
                         headers=auth(platform)).json()
    task = client.post("/api/v1/tasks/lease", headers=auth(otto)).json()["task"]["id"]
    client.post(f"/api/v1/tasks/{task}/verdict", json={"label": "fraud", "comment": "price"},
                headers=auth(otto))
    appeal = client.get(f"/api/v1/appeals/{opened['id']}", headers=auth(platform)).json()
    assert appeal["state"] == "upheld"
    rates = client.get("/api/v1/appeals/rates", headers=auth(platform)).json()
    row = next(r for r in rates if r["source"] == "classifier")
    assert (row["appealed"], row["reversed"], row["reversal_rate"]) == (1, 0, 0.0)
    assert row["appeal_rate"] == 1.0


def test_statement_of_reasons_and_dsa_export(client, make_user, settings):
    _, platform = make_user("platform", "analyst")
    fraud = _item(settings, 1, "fraud")
    ok = _item(settings, 2, "ok")
    with session_scope(settings.resolved_database_url) as s:
        ev_fraud = s.scalar(select(ItemStatus.event_id).where(ItemStatus.item_id == fraud))
        ev_ok = s.scalar(select(ItemStatus.event_id).where(ItemStatus.item_id == ok))
    sor = client.get(f"/api/v1/decisions/{ev_fraud}/statement", headers=auth(platform))
    assert sor.status_code == 200, sor.text
    body = sor.json()
    assert body["label"] == "fraud" and "absurd price" in body["policy_text"]
    assert body["automated_decision"] is True and body["facts"]["model"] == "lr-text-7"
    assert body["facts"]["threshold_set_version"] == 3
    assert f"/api/v1/items/{fraud}/appeals" in body["how_to_appeal"]
    # a decision that restricts nothing has no statement
    assert client.get(f"/api/v1/decisions/{ev_ok}/statement",
                      headers=auth(platform)).status_code == 404
    dsa = client.get(f"/api/v1/decisions/{ev_fraud}/statement?format=dsa",
                     headers=auth(platform)).json()
    assert dsa["decision_visibility"] == ["DECISION_VISIBILITY_CONTENT_REMOVED"]
    assert dsa["decision_ground"] == "DECISION_GROUND_INCOMPATIBLE_CONTENT"
    assert dsa["category"] == "STATEMENT_CATEGORY_SCAMS_AND_FRAUD"
    assert dsa["automated_decision"] == "AUTOMATED_DECISION_FULLY"
    assert dsa["automated_detection"] == "Yes" and dsa["puid"] == f"quorum-decision-{ev_fraud}"
    more = [_item(settings, 10 + i, "prohibited") for i in range(5)]
    assert len(more) == 5
    seen, after = [], 0
    while True:
        page = client.get(f"/api/v1/statements?after={after}&limit=2",
                          headers=auth(platform)).json()
        seen += [st["puid"] for st in page["statements"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert len(seen) == 6 == len(set(seen))  # fraud + 5 prohibited, no ok
    assert client.get("/api/v1/statements?limit=100000",
                      headers=auth(platform)).status_code == 422
