"""The per-batch automation report (API answer, ``quorum ingest``) and the daily report
filtered by platform source (``quorum report daily --source``)."""

from __future__ import annotations

import json

import pytest

from backend.db import session_scope, utcnow
from backend.decisions.service import NewDecision, record_decisions
from backend.items.service import ingest
from backend.queues import service as queues
from backend.reports import service as reports
from tests.conftest import auth, item_row


def _seeds_rule(settings) -> None:  # noqa: ANN001
    from backend.policy import get_policy
    from backend.rules.schemas import RuleCreate
    from backend.rules.service import create_rule

    with session_scope(settings.resolved_database_url) as s:
        create_rule(session=s, policy=get_policy(), allow_live=True, data=RuleCreate(
            name="seeds", expression='item.title.contains("seeds")', action="decide",
            label="prohibited", mode="active"))


def test_the_batch_answer_says_who_decided_what_and_where_the_rest_went(client, make_user,
                                                                         settings):
    _, token = make_user("ana", "analyst")
    _seeds_rule(settings)
    rows = [item_row(i, title=("Cannabis seeds " if i < 3 else "Desk lamp ") + str(i),
                     is_new=i != 4) for i in range(6)]
    r = client.post("/api/v1/items?wait=true", json=rows, headers=auth(token))
    assert r.status_code == 200, r.text
    report = r.json()["automation"]
    assert report == {"complete": True, "routing": 6, "decided": {"rule": 3},
                      "labels": {"rule": {"prohibited": 3}},
                      "queued": {"MANUAL": 1, "NEW_PRODUCTS": 2}, "shadow": {},
                      "spot_checks": report["spot_checks"]}
    assert report["spot_checks"] in (0, 1, 2, 3)
    # asynchronous: answered before routing, only what is known
    r = client.post("/api/v1/items?wait=false", json=[item_row(10 + i) for i in range(4)],
                    headers=auth(token))
    report = r.json()["automation"]
    assert report["complete"] is False and report["routing"] == 4
    assert report["decided"] == {} and report["queued"] == {}
    # nothing new: nothing to route
    again = client.post("/api/v1/items?wait=true", json=rows, headers=auth(token)).json()
    assert again["automation"]["routing"] == 0 and again["automation"]["decided"] == {}


def test_ingest_cli_prints_the_automation_report(settings, tmp_path):
    if not settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("the CLI is exercised once; the services it calls run on both backends")
    from tests.backend.test_cli import quorum

    assert quorum(settings, "db", "upgrade").returncode == 0
    _seeds_rule(settings)
    f = tmp_path / "items.jsonl"
    f.write_text("\n".join(json.dumps(item_row(i, title=("Cannabis seeds " if i < 2 else
                                                           "Lamp ") + str(i)))
                           for i in range(5)))
    r = quorum(settings, "ingest", str(f))
    assert r.returncode == 0, r.stderr
    assert "decided automatically: 2 of 3" not in r.stdout
    assert "decided automatically: 2 of 5: rule 2 (prohibited 2)" in r.stdout
    assert "queued: NEW_PRODUCTS 3" in r.stdout


def test_daily_report_filters_by_platform_source(session, settings, policy):
    now = utcnow()
    rows = [item_row(i, source="ads" if i < 4 else "shop") for i in range(10)]
    _, ids = ingest(session=session, rows=rows, policy=policy, now=now)
    record_decisions(session=session, now=now, decisions=[
        NewDecision(item_id=i, label="prohibited" if k < 4 else "ok",
                    source="rule" if k % 2 else "moderator") for k, i in enumerate(ids)])
    day = queues.queue_day(now, settings)
    everything = reports.daily_report(session=session, day=day)
    ads = reports.daily_report(session=session, day=day, source="ads")
    assert everything.class_mix.set_index("subset").loc["all", "n"] == 10
    mix = ads.class_mix.set_index("subset")
    assert mix.loc["all", "n"] == 4 and mix.loc["all", "prohibited"] == pytest.approx(100.0)
    by = ads.by_source.set_index("source")["decisions"]
    assert (by["rules"], by["moderators"]) == (2, 2) and ads.source == "ads"
    none = reports.daily_report(session=session, day=day, source="nowhere")
    assert none.class_mix.set_index("subset").loc["all", "n"] == 0
    if settings.resolved_database_url.startswith("sqlite"):
        session.commit()
        from tests.backend.test_cli import quorum

        out = quorum(settings, "report", "daily", "--day", str(day), "--source", "ads")
        assert out.returncode == 0, out.stderr
        assert "from ads" in out.stdout and "│ all " in out.stdout
        # an empty day (here: a source with nothing decided) says so, not 0.0% rows
        out = quorum(settings, "report", "daily", "--day", str(day), "--source", "nowhere")
        assert out.returncode == 0, out.stderr
        assert "No item from nowhere was decided on" in out.stdout
        assert "0.0" not in out.stdout
