"""Rules life cycle (issue 14, analysts item 3): draft → shadow → live by promotion on a
dry run; unknown fields refused at save; backtest precision with an interval and the labels
it rests on; hits per version; sample hits with why they matched."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from backend.db import session_scope, utcnow
from backend.decisions.models import ItemStatus
from backend.decisions.service import NewDecision, record_decisions
from backend.rules.models import RuleHit, RuleRun
from backend.users.models import AuditEntry
from tests.conftest import auth, item_row


@pytest.fixture
def h(make_user):  # noqa: ANN001, ANN201
    _, token = make_user("ana", "analyst")
    return auth(token)


def _ingest(client, h, rows):  # noqa: ANN001, ANN202
    r = client.post("/api/v1/items", headers=h, json=rows)
    assert r.status_code == 200, r.text
    return r.json()


def _label(settings, external_id: str) -> str | None:
    from backend.items.models import Item

    with session_scope(settings.resolved_database_url) as s:
        return s.scalar(select(ItemStatus.label).join(Item, Item.id == ItemStatus.item_id)
                        .where(Item.external_id == external_id))


def _verdict(settings, external_id: str, label: str) -> None:
    from backend.items.models import Item

    with session_scope(settings.resolved_database_url) as s:
        item_id = s.scalar(select(Item.id).where(Item.external_id == external_id))
        record_decisions(session=s, decisions=[
            NewDecision(item_id=item_id, label=label, source="moderator")])


def _audit(settings, action: str) -> list[AuditEntry]:
    with session_scope(settings.resolved_database_url) as s:
        rows = list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))
        s.expunge_all()
        return rows


# ---------------------------------------------------------------- unknown fields
def test_unknown_field_refused_at_save_with_the_known_fields(client, h, settings, tmp_path):
    r = client.post("/api/v1/rules", headers=h, json={
        "name": "typo", "expression": "item.nosuchfield > 3", "action": "decide",
        "label": "fraud"})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "unknown_field" and body["details"]["unknown"] == ["nosuchfield"]
    assert "item.nosuchfield" in body["message"] and "price" in body["message"]
    assert "metadata" in body["message"]
    r = client.post("/api/v1/rules", headers=h, json={
        "name": "idx", "expression": 'has(item.price) && item["pricee"] < 3.0',
        "action": "tag", "tag": "t"})
    assert r.status_code == 422 and "item.pricee" in r.json()["message"]
    ok = client.post("/api/v1/rules", headers=h, json={
        "name": "fine", "expression": "has(item.price) && item.price > 3.0", "action": "tag",
        "tag": "t"})
    assert ok.status_code == 201, ok.text
    r = client.patch("/api/v1/rules/fine", headers=h, json={"expression": "item.prize > 3.0"})
    assert r.status_code == 422 and "item.prize" in r.json()["message"]
    # a rules file is checked the same way (CLI and demo)
    from backend.policy import get_policy
    from backend.rules.service import load_rules_file

    f = tmp_path / "rules.yaml"
    f.write_text("- {name: filetypo, expression: 'item.sellr == \"x\"', action: tag, tag: t}\n")
    with session_scope(settings.resolved_database_url) as s, pytest.raises(Exception) as exc:
        load_rules_file(session=s, path=f, policy=get_policy())
    assert "item.sellr" in " ".join(exc.value.details)


def test_metadata_keys_are_free_form_but_warned_with_the_keys_seen(client, h):
    _ingest(client, h, [item_row(1, metadata={"brand": "acme", "colour": "red"})])
    r = client.post("/api/v1/rules", headers=h, json={
        "name": "brand", "expression": 'has(item.metadata.brnd) && item.metadata.brnd == "x"',
        "action": "tag", "tag": "t"})
    assert r.status_code == 201, r.text
    [warning] = r.json()["warnings"]
    assert "item.metadata.brnd" in warning and "brand, colour" in warning
    r = client.post("/api/v1/rules", headers=h, json={
        "name": "brand2", "expression": 'item.metadata.brand == "acme"', "action": "tag",
        "tag": "t"})
    assert r.status_code == 201 and r.json()["warnings"] == []


# ---------------------------------------------------------------- life cycle
def test_a_new_rule_is_a_draft_and_decides_nothing_until_promoted(client, h, settings):
    rule = {"name": "cheap-rolex", "action": "decide", "label": "fraud",
            "expression": 'has(item.price) && item.price < 5.0 && item.text.contains("rolex")'}
    r = client.post("/api/v1/rules", headers=h, json=rule | {"mode": "active"})
    assert r.status_code == 422 and "promot" in r.json()["message"]
    r = client.post("/api/v1/rules", headers=h, json=rule)
    assert r.status_code == 201 and (r.json()["mode"], r.json()["version"]) == ("draft", 1)
    r = client.patch("/api/v1/rules/cheap-rolex", headers=h, json={"mode": "active"})
    assert r.status_code == 422 and "dry run" in r.json()["message"]
    _ingest(client, h, [item_row(1, title="Rolex watch", price=2.0), item_row(2, price=50.0)])
    assert _label(settings, "X1") is None  # a draft is not even evaluated
    with session_scope(settings.resolved_database_url) as s:
        assert s.scalar(select(RuleHit.id)) is None

    dry = client.post("/api/v1/rules/cheap-rolex/dry-run", headers=h)
    assert dry.status_code == 200, dry.text
    run = dry.json()
    assert (run["kind"], run["version"], run["items_scanned"], run["hits"]) == (
        "dry_run", 1, 2, 1)
    assert run["current_labels"] == {"undecided": 1}
    [sample] = run["samples"]
    assert sample["external_id"] == "X1"
    assert sample["why"]["operator"] == "&&"
    assert [p["value"] for p in sample["why"]["parts"]] == [True, True, True]
    assert {"field": "price", "present": True, "value": 2.0} in sample["why"]["fields"]
    assert client.get(f"/api/v1/rules/cheap-rolex/runs/{run['run_id']}",
                      headers=h).json()["hits"] == 1

    r = client.post("/api/v1/rules/cheap-rolex/promote", headers=h,
                    json={"run_id": run["run_id"]})
    assert r.status_code == 200, r.text
    assert (r.json()["mode"], r.json()["version"]) == ("active", 2)
    _ingest(client, h, [item_row(3, title="Rolex again", price=1.0)])
    assert _label(settings, "X3") == "fraud"
    [entry] = _audit(settings, "rules.promote")
    assert entry.details == {"from": "draft", "to": "active", "run": run["run_id"],
                             "version": 2}
    assert _audit(settings, "rules.dry_run")[0].details["hits"] == 1


def test_promotion_rests_on_a_fresh_dry_run_of_the_current_version(client, h, settings,
                                                                   monkeypatch):
    for name in ("r1", "r2"):
        client.post("/api/v1/rules", headers=h, json={
            "name": name, "expression": "has(item.price) && item.price < 5.0",
            "action": "decide", "label": "fraud", "mode": "shadow"})
    run = client.post("/api/v1/rules/r1/dry-run", headers=h).json()["run_id"]
    other = client.post("/api/v1/rules/r2/dry-run", headers=h).json()["run_id"]
    r = client.post("/api/v1/rules/r1/promote", headers=h, json={"run_id": other})
    assert r.status_code == 404  # another rule's run
    backtest = client.post("/api/v1/rules/r1/backtest", headers=h).json()["run_id"]
    r = client.post("/api/v1/rules/r1/promote", headers=h, json={"run_id": backtest})
    assert r.status_code == 409 and "dry run on the latest items" in r.json()["message"]
    client.patch("/api/v1/rules/r1", headers=h, json={"expression": "item.price < 4.0"})
    r = client.post("/api/v1/rules/r1/promote", headers=h, json={"run_id": run})
    assert r.status_code == 409 and "v1" in r.json()["message"] and "v2" in r.json()["message"]
    run = client.post("/api/v1/rules/r1/dry-run", headers=h).json()["run_id"]
    with session_scope(settings.resolved_database_url) as s:  # an hour and a half later
        s.execute(update(RuleRun).where(RuleRun.id == run).values(
            created_at=utcnow() - timedelta(minutes=90)))
    r = client.post("/api/v1/rules/r1/promote", headers=h, json={"run_id": run})
    assert r.status_code == 409 and "older than 60 minutes" in r.json()["message"]
    run = client.post("/api/v1/rules/r1/dry-run", headers=h).json()["run_id"]
    assert client.post("/api/v1/rules/r1/promote", headers=h,
                       json={"run_id": run}).status_code == 200
    r = client.post("/api/v1/rules/r1/promote", headers=h, json={"run_id": run})
    assert r.status_code == 409  # live already (and the run is of an older version now)
    r = client.post("/api/v1/rules/r1/promote", headers=h, json={"run_id": 0})
    assert r.status_code == 422


def test_editing_a_live_rule_puts_it_back_in_shadow(client, h, settings):
    client.post("/api/v1/rules", headers=h, json={
        "name": "cheap", "expression": "has(item.price) && item.price < 5.0",
        "action": "decide", "label": "fraud"})
    run = client.post("/api/v1/rules/cheap/dry-run", headers=h).json()["run_id"]
    client.post("/api/v1/rules/cheap/promote", headers=h, json={"run_id": run})
    r = client.patch("/api/v1/rules/cheap", headers=h, json={"position": 5})
    assert r.json()["mode"] == "active"  # order only: still live
    r = client.patch("/api/v1/rules/cheap", headers=h,
                     json={"expression": "has(item.price) && item.price < 9.0"})
    assert r.status_code == 200 and r.json()["mode"] == "shadow"
    assert any("shadow" in w for w in r.json()["warnings"])
    _ingest(client, h, [item_row(1, price=1.0)])
    assert _label(settings, "X1") is None  # the edited version only watches


# ---------------------------------------------------------------- backtests
def test_backtest_precision_has_an_interval_and_says_too_few_labels(client, h, settings):
    client.post("/api/v1/rules", headers=h, json={
        "name": "cheap", "expression": "has(item.price) && item.price < 5.0",
        "action": "decide", "label": "fraud", "mode": "shadow"})
    _ingest(client, h, [item_row(1, price=1.0), item_row(2, price=2.0), item_row(3, price=9.0)])
    _verdict(settings, "X1", "fraud")  # one verdict: "100%" alone would say nothing
    res = client.post("/api/v1/rules/cheap/backtest", headers=h).json()
    assert (res["hits"], res["labelled"], res["agree"], res["precision"]) == (2, 1, 1, 1.0)
    # Wilson 95 % for 1 of 1 (scipy.stats.binomtest(1, 1).proportion_ci("wilson"))
    assert res["precision_lower"] == pytest.approx(0.2065, abs=1e-3)
    assert res["precision_upper"] == 1.0
    assert (res["confidence"], res["interval_method"]) == (0.95, "wilson")
    assert res["too_few_labels"] is True
    assert any(w.startswith("too few labels") for w in res["warnings"])
    assert res["current_labels"] == {"fraud": 1, "undecided": 1}


def test_zero_hits_say_which_field_no_item_has(client, h):
    client.post("/api/v1/rules", headers=h, json={
        "name": "gmv", "expression": "has(item.gmv) && item.gmv > 3.0", "action": "tag",
        "tag": "t"})
    _ingest(client, h, [item_row(1), item_row(2)])
    res = client.post("/api/v1/rules/gmv/dry-run", headers=h).json()
    assert res["hits"] == 0
    assert res["fields_read"] == [{"field": "gmv", "present_on": 0}]
    assert any("no scanned item has item.gmv" in w for w in res["warnings"])
    assert any(w.startswith("0 hits on 2 items") for w in res["warnings"])


def test_hits_are_counted_per_version_never_mixed(client, h):
    client.post("/api/v1/rules", headers=h, json={
        "name": "cheap", "expression": "has(item.price) && item.price < 5.0",
        "action": "tag", "tag": "cheap", "mode": "shadow"})
    _ingest(client, h, [item_row(1, price=1.0), item_row(2, price=2.0)])
    client.patch("/api/v1/rules/cheap", headers=h,
                 json={"expression": "has(item.price) && item.price < 1.5"})
    _ingest(client, h, [item_row(3, price=1.0), item_row(4, price=2.0)])
    versions = client.get("/api/v1/rules/cheap/versions", headers=h).json()
    assert [(v["version"], v["mode"], v["hits"], v["shadow_hits"]) for v in versions] == [
        (2, "shadow", 0, 1), (1, "shadow", 0, 2)]
    assert versions[0]["expression"] == "has(item.price) && item.price < 1.5"


def test_a_promotion_racing_an_edit_is_a_conflict_not_a_live_rule(session, policy):
    """The promotion's UPDATE is conditional on the version the dry run tried: an edit that
    lands between the check and the UPDATE (here: behind the ORM's back) wins cleanly."""
    from backend.errors import Conflict
    from backend.rules import runs
    from backend.rules.models import Rule
    from backend.rules.schemas import RuleCreate
    from backend.rules.service import create_rule

    rule = create_rule(session=session, policy=policy, data=RuleCreate(
        name="racy", expression="true", action="tag", tag="t", mode="shadow"))
    run = runs.run_rule(session=session, rule=rule, kind="dry_run")
    session.execute(update(Rule).where(Rule.id == rule.id).values(
        version=Rule.version + 1, expression="false").execution_options(
        synchronize_session=False))  # another request's edit; this object is stale
    with pytest.raises(Conflict, match="changed while it was being promoted"):
        runs.promote(session=session, rule=rule, run_id=run.run_id)
    session.expire_all()
    assert session.get(Rule, rule.id).mode == "shadow"
