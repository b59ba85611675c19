"""Item pages (the full timeline with provenance and comments), "my recent decisions", and
nearest past verdicts shown as cards a moderator can act on."""

from __future__ import annotations

import re

from backend.db import session_scope, utcnow
from backend.decisions.service import NewDecision, record_decisions
from backend.items.service import ingest
from backend.policy import get_policy
from backend.queues import service as queues
from backend.web import service as web
from backend.web.history import format_distance
from tests.backend.conftest import ml_on  # noqa: F401
from tests.conftest import item_row
from tests.web.test_web import PASSWORD, _csrf, _queue, login


def _verdict(client, csrf: str, label: str, comment: str = "") -> int:  # noqa: ANN001
    start = client.post("/work/start", data={"csrf": csrf}, follow_redirects=False)
    task_id = int(re.match(r"/work/(\d+)", start.headers["location"]).group(1))
    resp = client.post(f"/work/{task_id}/verdict",
                       data={"label": label, "comment": comment, "time_spent_ms": "2500"},
                       headers={"X-CSRF-Token": csrf, "X-Requested-With": "fetch"})
    assert resp.status_code == 200, resp.text
    return task_id


def test_item_page_shows_every_event_with_provenance_and_comments(client, make_user,
                                                                  settings):
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    ids = _queue(settings, "MANUAL", 2)
    with session_scope(settings.resolved_database_url) as s:  # an automatic decision first
        record_decisions(session=s, decisions=[NewDecision(
            item_id=ids[0], label="ok", source="classifier", model_id="lr-text-7",
            threshold_set_version=3, confidence=0.97)], now=utcnow())
    login(client, "mia")
    csrf = _csrf(client.get("/queues").text)
    _verdict(client, csrf, "fraud", comment="absurd price for a phone")
    page = client.get(f"/items/{ids[0]}")
    assert page.status_code == 200
    text = page.text
    # both decisions, the automatic one superseded by the moderator's, with provenance
    assert "Decided ok (classifier)" in text and "model: lr-text-7" in text
    assert "threshold set: v3" in text and "automated: True" in text
    assert "Decided fraud (moderator)" in text and "moderator: mia" in text
    assert text.index("Decided ok (classifier)") < text.index("Decided fraud (moderator)")
    assert "superseded" in text and "current" in text
    assert "Current decision: <b class=\"label-fraud\">fraud</b>" in text
    # the comment written in the work view is shown again, with the answer's time
    assert "absurd price for a phone" in text and "time: 2.5 s" in text
    assert "Queued in MANUAL_" in text


def test_my_recent_decisions_link_to_item_pages(client, make_user, settings):
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    make_user("otto", "moderator", ["MANUAL"], password=PASSWORD)
    ids = _queue(settings, "MANUAL", 3)
    login(client, "mia")
    csrf = _csrf(client.get("/queues").text)
    _verdict(client, csrf, "fraud")
    _verdict(client, csrf, "ok", comment="fine")
    page = client.get("/my/decisions")
    assert page.status_code == 200
    rows = re.findall(r'<a href="/items/(\d+)">', page.text)
    assert [int(r) for r in rows] == [ids[1], ids[0]]  # newest first
    assert "fine" in page.text and "superseded" not in page.text.split("<tbody>")[1]
    client.post("/logout", data={"csrf": csrf})
    login(client, "otto")  # someone else's list is their own
    assert 'href="/items/' not in client.get("/my/decisions").text
    assert client.get("/my/decisions?limit=100000").status_code == 422


def test_item_page_unknown_or_out_of_range_ids_are_404_pages(client, make_user, settings):
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    login(client, "mia")
    assert client.get("/items/999999").status_code == 404
    assert client.get(f"/items/{2**70}").status_code == 404
    assert client.get("/items/0").status_code == 404


def test_distances_are_rounded_for_people():
    assert format_distance(-0.0000001) == "0 (identical)"
    assert format_distance(0.0) == "0 (identical)"
    assert format_distance(0.123456) == "0.123"
    assert format_distance(0.0042) == "0.0042"
    assert not format_distance(-0.004).startswith("-")


def test_nearest_verdicts_are_cards_that_say_when_they_disagree(client, make_user, settings,
                                                                monkeypatch):
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    ids = _queue(settings, "MANUAL", 3)
    near = [web.NearestVerdict(item_id=ids[1], label="fraud", distance=-0.0000003,
                               title="Phone X 256GB", decided_by="alice",
                               decided_at=utcnow()),
            web.NearestVerdict(item_id=ids[2], label="ok", distance=0.0731,
                               title="Phone X case", decided_by="crowd")]
    monkeypatch.setattr(web, "nearest_verdicts", lambda session, item_id: near)
    login(client, "mia")
    csrf = _csrf(client.get("/queues").text)
    start = client.post("/work/start", data={"csrf": csrf}, follow_redirects=False)
    page = client.get(start.headers["location"]).text
    assert f'href="/items/{ids[1]}"' in page and "Phone X 256GB" in page
    assert "alice" in page and "crowd" in page
    assert "distance 0 (identical)" in page and "distance 0.0731" in page
    assert "d=-0.00" not in page and "-0.00" not in page
    assert "Nearest verdicts disagree" in page
    # the item itself links to its page
    assert f'href="/items/{ids[0]}"' in page


def test_an_item_the_crowd_could_not_settle_shows_its_votes_on_the_work_card(
        client, make_user, settings):
    """Items still ambiguous at the crowd's cap reach moderators with the votes and the
    reason (issue #13): the card lists label → count."""
    make_user("cara", "moderator", ["CROWD_DISAGREE"], password=PASSWORD)
    with session_scope(settings.resolved_database_url) as s:
        _, ids = ingest(session=s, rows=[item_row(0)], policy=get_policy())
        queues.enqueue(session=s, kind="CROWD_DISAGREE", item_ids=ids, now=utcnow(),
                       settings=settings,
                       payloads=[{"crowd_pool_id": 7, "reason": "no agreement at 5 answers "
                                  "(confidence 0.71)",
                                  "answers": [{"worker": "w1", "label": "adult"},
                                              {"worker": "w2", "label": "ok"},
                                              {"worker": "w3", "label": "adult"}]}])
    login(client, "cara")
    csrf = _csrf(client.get("/queues").text)
    start = client.post("/work/start", data={"csrf": csrf}, follow_redirects=False)
    page = client.get(start.headers["location"]).text
    assert "Crowd votes" in page
    votes = re.search(r'<ul class="crowd-votes"[^>]*>(.*?)</ul>', page, re.S).group(1)
    assert re.findall(r'label-(\w+)">\w+</span> <b>(\d+)</b>', votes) == [("adult", "2"),
                                                                           ("ok", "1")]
    assert "no agreement at 5 answers (confidence 0.71)" in page


def test_item_page_shows_the_appeal_and_its_outcome(client, make_user, settings):
    from backend.appeals.service import open_appeal

    make_user("otto", "moderator", ["APPEALS"], password=PASSWORD)
    [item] = _queue(settings, "MANUAL", 1)
    with session_scope(settings.resolved_database_url) as s:
        record_decisions(session=s, now=utcnow(), decisions=[NewDecision(
            item_id=item, label="fraud", source="classifier", model_id="m",
            threshold_set_version=1, confidence=0.99)])
        open_appeal(session=s, item_id=item, reason="a genuine sale", appellant="seller S1",
                    external_ref="ref-1", now=utcnow(), settings=settings)
    login(client, "otto")
    csrf = _csrf(client.get("/queues").text)
    _verdict(client, csrf, "fraud", comment="the price is still absurd")  # upheld
    text = client.get(f"/items/{item}").text
    assert "Appeal opened by seller S1" in text and "a genuine sale" in text
    assert "reference: ref-1" in text and "state: upheld" in text
    assert "Appeal upheld" in text and "the price is still absurd" in text and "by: otto" in text
    assert text.index("Decided fraud (classifier)") < text.index("Appeal opened") \
        < text.index("Appeal upheld")


def _no_encoding(monkeypatch):  # noqa: ANN001, ANN202
    """The process's encoder, made to fail if anything encodes."""
    from backend.ml_adapter.service import get_encoder

    encoder = get_encoder()

    def boom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the encoder ran inside a web request")

    monkeypatch.setattr(encoder, "encode", boom)
    return encoder


def _decided_with_vectors(settings, n: int, start: int, title: str) -> list[int]:  # noqa: ANN001
    from backend.ml_adapter.service import _rows_for, ensure_embeddings, get_encoder

    with session_scope(settings.resolved_database_url) as s:
        _, ids = ingest(session=s, rows=[item_row(start + i, title=f"{title} {i}")
                                         for i in range(n)], policy=get_policy())
        ensure_embeddings(session=s, rows=_rows_for(s, ids), encoder=get_encoder())
        record_decisions(session=s, now=utcnow(), decisions=[
            NewDecision(item_id=i, label="fraud", source="moderator") for i in ids])
    return ids


def _card(client):  # noqa: ANN001, ANN202
    csrf = _csrf(client.get("/queues").text)
    start = client.post("/work/start", data={"csrf": csrf}, follow_redirects=False)
    return client.get(start.headers["location"])


def test_card_without_a_stored_vector_never_encodes_and_says_so(client, make_user, settings,
                                                                 ml_on, monkeypatch):  # noqa: F811
    from sqlalchemy import func, select

    from backend.items.models import ItemEmbedding

    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    _decided_with_vectors(settings, 3, 50, "Phone X 256GB")
    [item] = _queue(settings, "MANUAL", 1, title="Phone X 256GB sealed")  # no vector (ML off)
    _no_encoding(monkeypatch)
    login(client, "mia")
    page = _card(client)
    assert page.status_code == 200
    assert "No vector yet for this item (run <code>quorum embed</code>)" in page.text
    with session_scope(settings.resolved_database_url) as s:
        assert s.scalar(select(func.count()).select_from(ItemEmbedding)
                        .where(ItemEmbedding.item_id == item)) == 0


def test_card_with_a_stored_vector_shows_neighbours_without_encoding(client, make_user,
                                                                     settings, ml_on,  # noqa: F811
                                                                     monkeypatch):
    from backend.ml_adapter.service import _rows_for, ensure_embeddings, get_encoder

    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    decided = _decided_with_vectors(settings, 2, 50, "Phone X 256GB")
    [item] = _queue(settings, "MANUAL", 1, title="Phone X 256GB sealed")
    with session_scope(settings.resolved_database_url) as s:
        ensure_embeddings(session=s, rows=_rows_for(s, [item]), encoder=get_encoder())
        # a later human verdict on an item without a vector: the request must not encode it
        _, [late] = ingest(session=s, rows=[item_row(90, title="Phone X 256GB 9")],
                           policy=get_policy())
        record_decisions(session=s, now=utcnow(), decisions=[
            NewDecision(item_id=late, label="ok", source="moderator")])
    _no_encoding(monkeypatch)
    login(client, "mia")
    page = _card(client).text
    assert "No vector yet" not in page
    for other in decided:
        assert f'href="/items/{other}"' in page
    assert f'href="/items/{late}"' not in page  # joins the index at the next `quorum embed`
