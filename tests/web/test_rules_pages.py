"""The rules pages: a new rule is a draft, a dry run shows what it would hit and why, and
promotion makes it live; every form redirects to a GET page (issue 14, analysts item 3)."""

from __future__ import annotations

import re

from sqlalchemy import select

from backend.db import session_scope
from backend.items.service import ingest
from backend.policy import get_policy
from backend.rules.models import Rule
from backend.users.models import AuditEntry
from tests.conftest import item_row
from tests.web.test_web import PASSWORD, _csrf, login


def _items(settings, rows) -> None:  # noqa: ANN001
    with session_scope(settings.resolved_database_url) as s:
        ingest(session=s, rows=rows, policy=get_policy())


def _rule_id(settings, name: str) -> int:
    with session_scope(settings.resolved_database_url) as s:
        return s.scalar(select(Rule.id).where(Rule.name == name))


def test_create_dry_run_promote_with_redirects_and_audit(client, make_user, settings):
    make_user("ana", "analyst", password=PASSWORD)
    _items(settings, [item_row(1, title="Rolex watch", price=2.0), item_row(2, price=50.0)])
    login(client, "ana")
    page = client.get("/admin/rules")
    assert page.status_code == 200 and "New rule" in page.text
    csrf = _csrf(page.text)
    r = client.post("/admin/rules", follow_redirects=False, data={
        "csrf": csrf, "name": "cheap-rolex", "action": "decide", "target": "fraud",
        "expression": 'has(item.price) && item.price < 5.0 && item.text.contains("rolex")'})
    assert r.status_code == 303, r.text
    rule_id = _rule_id(settings, "cheap-rolex")
    assert r.headers["location"].startswith(f"/admin/rules/{rule_id}?notice=")
    page = client.get(r.headers["location"])
    assert "Created cheap-rolex v1 as draft." in page.text
    assert "Promote to live" not in page.text  # no dry run yet

    r = client.post(f"/admin/rules/{rule_id}/dry-run", data={"csrf": csrf},
                    follow_redirects=False)
    assert r.status_code == 303 and "?run=" in r.headers["location"]
    page = client.get(r.headers["location"])
    assert page.status_code == 200
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.text))
    assert "Dry run of cheap-rolex v1" in text and "2 items scanned (the latest) · 1 hit " in text
    assert 'item.text.contains("rolex") → true' in text.replace("&#34;", '"')
    assert "item.price = 2.0" in text
    assert "too few labels" in text  # no human verdict behind it
    assert "Promote to live" in page.text
    run_id = re.search(r'name="run_id" value="(\d+)"', page.text).group(1)

    # reloading a form's URL by GET never meets "Method Not Allowed"
    for action in ("dry-run", "backtest", "promote", "edit", "mode"):
        g = client.get(f"/admin/rules/{rule_id}/{action}", follow_redirects=False)
        assert (g.status_code, g.headers["location"]) == (303, f"/admin/rules/{rule_id}")

    r = client.post(f"/admin/rules/{rule_id}/promote", data={"csrf": csrf, "run_id": run_id},
                    follow_redirects=False)
    assert r.status_code == 303
    page = client.get(r.headers["location"])
    assert "cheap-rolex is live (v2)." in page.text
    with session_scope(settings.resolved_database_url) as s:
        assert s.get(Rule, rule_id).mode == "active"
        acts = [a.action for a in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert acts[-3:] == ["rule.create", "rule.dry_run", "rule.promote"]
    listing = client.get("/admin/rules").text
    assert "live" in listing and "Hits, this version" in listing


def test_the_mode_form_cannot_make_a_rule_live(client, make_user, settings):
    make_user("ana", "analyst", password=PASSWORD)
    login(client, "ana")
    csrf = _csrf(client.get("/admin/rules").text)
    client.post("/admin/rules", data={"csrf": csrf, "name": "t", "action": "tag",
                                      "target": "t", "expression": "true"})
    rule_id = _rule_id(settings, "t")
    r = client.post(f"/admin/rules/{rule_id}/mode", data={"csrf": csrf, "mode": "active"},
                    follow_redirects=False)
    assert r.status_code == 303
    assert "promotion" in client.get(r.headers["location"]).text
    r = client.post(f"/admin/rules/{rule_id}/mode", data={"csrf": csrf, "mode": "shadow"},
                    follow_redirects=False)
    assert "t is shadow (v2)." in client.get(r.headers["location"]).text
    with session_scope(settings.resolved_database_url) as s:
        assert s.get(Rule, rule_id).mode == "shadow"


def test_an_unknown_field_is_refused_with_the_form_kept(client, make_user, settings):
    make_user("ana", "analyst", password=PASSWORD)
    login(client, "ana")
    csrf = _csrf(client.get("/admin/rules").text)
    r = client.post("/admin/rules", data={
        "csrf": csrf, "name": "typo", "action": "decide", "target": "fraud",
        "expression": "item.nosuchfield > 3"})
    assert r.status_code == 422
    assert "item.nosuchfield, which an item does not have" in r.text
    assert "item.nosuchfield &gt; 3</textarea>" in r.text  # what was typed stays
    assert _rule_id(settings, "typo") is None


def test_moderators_get_403_and_forms_need_csrf(client, make_user, settings):
    make_user("ana", "analyst", password=PASSWORD)
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    login(client, "ana")
    csrf = _csrf(client.get("/admin/rules").text)
    client.post("/admin/rules", data={"csrf": csrf, "name": "t", "action": "tag",
                                      "target": "t", "expression": "true"})
    rule_id = _rule_id(settings, "t")
    r = client.post(f"/admin/rules/{rule_id}/dry-run", data={})
    assert r.status_code == 403 and "security token" in r.text
    client.cookies.clear()
    login(client, "mia")
    assert client.get(f"/admin/rules/{rule_id}").status_code == 403
    assert client.get("/admin/rules").status_code == 403


def test_backtest_page_shows_the_interval_and_the_labels_it_rests_on(client, make_user,
                                                                     settings):
    from backend.decisions.service import NewDecision, record_decisions
    from backend.items.models import Item

    make_user("ana", "analyst", password=PASSWORD)
    _items(settings, [item_row(1, price=1.0), item_row(2, price=2.0)])
    with session_scope(settings.resolved_database_url) as s:
        item_id = s.scalar(select(Item.id).where(Item.external_id == "X1"))
        record_decisions(session=s, decisions=[
            NewDecision(item_id=item_id, label="fraud", source="moderator")])
    login(client, "ana")
    csrf = _csrf(client.get("/admin/rules").text)
    client.post("/admin/rules", data={"csrf": csrf, "name": "cheap", "action": "decide",
                                      "target": "fraud", "mode": "shadow",
                                      "expression": "has(item.price) && item.price < 5.0"})
    rule_id = _rule_id(settings, "cheap")
    r = client.post(f"/admin/rules/{rule_id}/backtest", data={"csrf": csrf})
    assert r.status_code == 200  # followed the redirect to the stored run
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r.text))
    assert "Backtest of cheap v1" in text
    assert "100.0% , 95% interval 20.7% – 100.0% (wilson)" in text
    assert "resting on 1 labelled hit (1 agree, 0 disagree) · too few labels" in text
    assert "Hits by current label: fraud 1 undecided 1" in text
