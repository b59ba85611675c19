"""What an analyst does from the threshold report, through the TestClient: the Apply button
(confirmation, CSRF, audited, an unbacked proposal refused with a sentence), Restore, the
interactive what-if (its numbers read off the calibration run), the per-threshold columns,
appeal and reversal rates, and the CLI's apply in the audit trail."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sqlalchemy import select

from backend.calibration import service as calibration
from backend.calibration import thresholds
from backend.calibration.models import ThresholdSet
from backend.db import session_scope, utcnow
from backend.decisions.service import NewDecision, record_decisions
from backend.items.service import ingest
from backend.users.models import AuditEntry
from tests.backend.calibrated import calibrate_reuse
from tests.backend.test_calibration_service import _labelled
from tests.conftest import auth, item_row
from tests.web.test_web import PASSWORD, _csrf, login


def _states(settings) -> dict[int, str]:  # noqa: ANN001
    with session_scope(settings.resolved_database_url) as s:
        return dict(s.execute(select(ThresholdSet.version, ThresholdSet.state)).tuples().all())


def _audit(settings, action: str) -> list[AuditEntry]:  # noqa: ANN001
    with session_scope(settings.resolved_database_url) as s:
        rows = list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)
                              .order_by(AuditEntry.id)))
        s.expunge_all()
        return rows


def _apply_form(html: str, version: int) -> re.Match | None:
    return re.search(rf'action="/admin/thresholds/{version}/apply">.*?</form>', html, re.S)


def test_apply_button_confirms_applies_audits_and_restores(client, make_user, session,
                                                            settings, policy, ml_on):
    active = thresholds.active_threshold_set(session=session, policy=policy).version
    run = calibrate_reuse(session, settings, policy, apply=False)
    proposed = run.result["proposed_version"]
    assert proposed is not None
    session.commit()
    ana_id, _ = make_user("ana", "analyst", password=PASSWORD)
    _, mod = make_user("mo", "moderator", ["MANUAL"], password=PASSWORD)
    login(client, "ana")
    page = client.get("/reports/thresholds")
    assert page.status_code == 200
    form = _apply_form(page.text, proposed)
    assert form and f"Apply v{proposed} (instead of v{active})" in form.group(0)
    assert 'name="csrf"' in form.group(0)
    # no CSRF token: refused, nothing applied
    assert client.post(f"/admin/thresholds/{proposed}/apply",
                       data={"back": "report"}).status_code == 403
    # first press: a confirmation page, nothing applied yet
    ask = client.post(f"/admin/thresholds/{proposed}/apply",
                      data={"csrf": _csrf(page.text), "back": "report"})
    assert ask.status_code == 200 and f"Apply threshold set v{proposed}?" in ask.text
    assert "reuse_distance" in ask.text and 'name="confirm" value="yes"' in ask.text
    assert _states(settings)[proposed] == "proposed"
    done = client.post(f"/admin/thresholds/{proposed}/apply", follow_redirects=False,
                       data={"csrf": _csrf(page.text), "back": "report", "confirm": "yes"})
    assert done.status_code == 303
    assert done.headers["location"] == f"/reports/thresholds?applied={proposed}"
    assert _states(settings)[proposed] == "active" and _states(settings)[active] == "retired"
    [entry] = _audit(settings, "thresholds.apply")
    assert entry.user_id == ana_id and entry.target_id == str(proposed)
    assert entry.details == {"previous": active, "via": "web"}
    after = client.get(f"/reports/thresholds?applied={proposed}")
    assert f"Threshold set v{proposed} is active" in after.text
    restore = _apply_form(after.text, active)
    assert restore and f"Restore v{active}" in restore.group(0)
    ask = client.post(f"/admin/thresholds/{active}/apply",
                      data={"csrf": _csrf(after.text), "back": "report"})
    assert ask.status_code == 200 and f"Restore threshold set v{active}?" in ask.text
    client.post(f"/admin/thresholds/{active}/apply",
                data={"csrf": _csrf(after.text), "back": "report", "confirm": "yes"})
    assert _states(settings)[active] == "active"
    [entry] = _audit(settings, "thresholds.restore")
    assert entry.details == {"previous": proposed, "via": "web"}
    # a moderator has neither the buttons nor the route
    client.cookies.clear()
    login(client, "mo")
    queues_page = client.get("/queues")
    assert client.post(f"/admin/thresholds/{proposed}/apply", data={
        "csrf": _csrf(queues_page.text), "confirm": "yes"}).status_code == 403
    assert mod


def test_unbacked_proposal_is_refused_with_a_sentence(client, make_user, session, settings,
                                                      policy):
    active = thresholds.active_threshold_set(session=session, policy=policy)
    unbacked = thresholds.propose(session=session, policy=policy, bands=dict(active.bands),
                                  reuse_distance=0.0123, auto_decide=list(active.auto_decide),
                                  note="hand-made")
    session.commit()
    make_user("ana", "analyst", password=PASSWORD)
    login(client, "ana")
    page = client.get("/reports/thresholds")
    assert f"Threshold set v{unbacked.version} is not backed" in page.text
    assert _apply_form(page.text, unbacked.version) is None  # no Apply button for it
    csrf = _csrf(client.get("/admin/thresholds").text)  # that page still lists it
    for data in ({}, {"confirm": "yes"}):
        r = client.post(f"/admin/thresholds/{unbacked.version}/apply",
                        data={"csrf": csrf, "back": "report", **data})
        assert r.status_code == 409
        assert (f"Threshold set v{unbacked.version} is not backed and was not applied: "
                "reuse_distance 0.0123") in r.text
        assert 'name="confirm"' not in r.text
    assert _states(settings)[unbacked.version] == "proposed"
    assert _audit(settings, "thresholds.apply") == []
    # the API still applies it on purpose (it runs in shadow), audited
    _, token = make_user("api", "analyst")
    r = client.post(f"/api/v1/thresholds/{unbacked.version}/apply", headers=auth(token))
    assert r.status_code == 200
    assert [e.details["via"] for e in _audit(settings, "thresholds.apply")] == ["api"]


def _scored(session, settings, policy):  # noqa: ANN001, ANN202
    from backend.ml_adapter.service import train

    _labelled(session, settings, policy, 40)
    train(session=session)
    run = calibration.run_calibration(session=session, kind="classifier")
    # today's items, scored by the trained model on the way in
    from tests.backend.conftest import route_rows

    route_rows(session, settings, policy, [item_row(500 + i, title=(
        "Cannabis seeds strain " if i % 3 else "Cotton t-shirt size ") + str(i))
        for i in range(30)])
    session.commit()
    return run


def test_what_if_numbers_match_the_calibration_run(client, make_user, session, settings,
                                                   policy, ml_on):
    from ml.calibration import counts_at, proportion_bounds

    run = _scored(session, settings, policy)
    base = calibration.base_set(session=session, policy=policy)
    cal = calibration.get_calibration_settings()
    cut = 0.6
    scores, _ = calibration.todays_scores(session=session, model_id=run.result["model_id"])
    curve = calibration.run_curve(run, "prohibited")
    session.commit()  # SQLite: a reading session holds the write lock the app needs
    _, token = make_user("an", "analyst", password=PASSWORD)
    r = client.get("/api/v1/calibration/what-if", headers=auth(token),
                   params={"version": base.version, "cut": [f"prohibited.high:{cut}",
                                                            "prohibited.middle:0.3"]})
    assert r.status_code == 200, r.text
    w = r.json()
    # the volumes: today's items whose top label is prohibited and whose score passes
    labels = [c for c in scores.columns if c in run.result["curve_totals"]]
    top = scores[labels].idxmax(axis=1)
    p = scores["prohibited"].where(top == "prohibited", -np.inf)
    high = next(x for x in w["labels"] if x["label"] == "prohibited"
                and x["band"] == "ML_BAD_HIGH")
    assert high["threshold"] == cut and high["n_items"] == int((p >= cut).sum())
    middle = next(x for x in w["labels"] if x["label"] == "prohibited"
                  and x["band"] == "ML_BAD_MIDDLE")
    assert middle["n_items"] == int(((p >= 0.3) & (p < cut)).sum())
    # the precision and its interval: the run's curve read at the cut-off
    at = counts_at(curve, thresholds=[cut]).iloc[0]
    assert high["precision"] == pytest.approx(at["tp"] / at["n_auto"])
    lo, hi = proportion_bounds(successes=int(at["tp"]), trials=int(at["n_auto"]),
                               confidence=cal.confidence, method=cal.bound_method)
    assert (high["precision_lower"], high["precision_upper"]) == pytest.approx(
        (float(lo), float(hi)))
    # the deciding cut-off decides only where the run backs it and its band is switched on
    ev = thresholds.assess(curve=curve, value=cut, target=cal.target_precision,
                           confidence=cal.confidence, method=cal.bound_method, run_id=run.id)
    state = w["cut_states"]["prohibited"]
    on = "ML_BAD_HIGH" in base.auto_decide
    assert state["state"] == ("live" if ev["backed"] and on else "shadow" if on else "off")
    assert state["lower"] == pytest.approx(ev["lower"])
    assert w["n_auto"] + w["n_routed"] == w["n_items"] == len(scores)
    assert w["automation_share"] == pytest.approx(w["n_auto"] / w["n_items"])
    assert w["moderator_cost"] == pytest.approx(w["n_routed"] * cal.moderator_cost_per_item)
    assert w["crowd_cost"] == pytest.approx(
        w["n_routed"] * cal.crowd_cost_per_item * cal.crowd_overlap)
    # the page shows the same numbers
    login(client, "an")
    page = client.get("/reports/thresholds/what-if", params={
        "version": base.version, "prohibited.high": str(cut), "prohibited.middle": "0.3"})
    assert page.status_code == 200
    assert f'data-k="n_auto">{w["n_auto"]}<' in page.text
    assert f'data-k="n_routed">{w["n_routed"]}<' in page.text
    assert f'<td class="num">{high["n_items"]}</td>' in page.text
    assert f'{100 * high["precision"]:.1f} %' in page.text
    # bad input: a sentence, not a 500
    bad = client.get("/reports/thresholds/what-if", params={"prohibited.high": "lots"})
    assert bad.status_code == 422 and "is not a number" in bad.text
    r = client.get("/api/v1/calibration/what-if", headers=auth(token),
                   params={"cut": "prohibited.high:1.5"})
    assert r.status_code == 422 and "between 0 and 1" in r.json()["message"]
    r = client.get("/api/v1/calibration/what-if", headers=auth(token),
                   params={"cut": "nosuch.high:0.5"})
    assert r.status_code == 422 and "not a policy label" in r.json()["message"]
    r = client.get("/api/v1/calibration/what-if", headers=auth(token),
                   params={"cut": "prohibited.high"})
    assert r.status_code == 422 and "<label>.<cut>:<value>" in r.json()["message"]


def test_report_tables_have_bound_share_and_cost_columns(client, make_user, session,
                                                          settings, policy, ml_on):
    from backend.reports.thresholds import _table, build_thresholds_report

    run = calibrate_reuse(session, settings, policy, apply=False, n=40)
    cal = calibration.get_calibration_settings()
    curve = calibration.run_curve(run)
    rows = _table(curve, [0.2, 0.3, 0.4, 0.5, 0.05], cal=cal, marks={"current": 0.1})
    # every pair is within 0.1: the distances 0.2 … 0.5 reuse the very same pairs: one row
    assert [r["threshold_text"] for r in rows] == ["0.05", "0.2–0.5"]
    whole = rows[1]
    assert whole["n_auto"] == 40 and whole["n_routed"] == 0 and whole["automation"] == "100.0%"
    assert whole["avoided_moderators"] == pytest.approx(40 * cal.moderator_cost_per_item)
    assert whole["routed_crowd"] == 0
    half = rows[0]
    assert half["n_auto"] == 20 and half["automation"] == "50.0%"
    assert half["routed_moderators"] == pytest.approx(20 * cal.moderator_cost_per_item)
    assert rows[0]["lower"] != "undefined" and float(rows[0]["lower"].rstrip("%")) < 100
    html = build_thresholds_report(session=session).html
    assert "<th>lower bound</th><th>reused</th><th>to people</th><th>automation share</th>" \
        in html
    assert "Current vs proposed, band by band" in html


def test_appeal_rates_in_the_report_and_a_reversal_feeds_calibration(client, make_user,
                                                                     session, settings,
                                                                     policy):
    _, otto = make_user("otto", "moderator", ["APPEALS"])
    _, platform = make_user("platform", "analyst")
    _, ids = ingest(session=session, rows=[item_row(i) for i in range(4)], policy=policy)
    record_decisions(session=session, decisions=[NewDecision(
        item_id=i, label="fraud", source="classifier", model_id="m", threshold_set_version=1,
        confidence=0.99, details={"band": "ML_BAD_HIGH"}) for i in ids])
    session.commit()
    assert calibration.labelled_set(session=session, policy=policy, as_of=utcnow()) == []
    session.commit()  # SQLite: a reading session holds the write lock the app needs
    appeal = client.post(f"/api/v1/items/{ids[0]}/appeals", json={"reason": "not fraud"},
                         headers=auth(platform)).json()
    task = client.post("/api/v1/tasks/lease", headers=auth(otto)).json()["task"]["id"]
    assert task == appeal["task_id"]
    client.post(f"/api/v1/tasks/{task}/verdict", json={"label": "ok", "comment": "real sale"},
                headers=auth(otto))
    session.expire_all()
    # the reversed automatic decision is a labelled error: calibration takes the human "ok"
    assert calibration.labelled_set(session=session, policy=policy,
                                    as_of=utcnow()) == [(ids[0], "ok")]
    session.commit()
    rates = {(r["source"], r["band"]): r for r in client.get(
        "/api/v1/appeals/rates", headers=auth(platform)).json()}
    row = rates[("classifier", "ML_BAD_HIGH")]
    assert (row["decisions"], row["appealed"], row["reversed"]) == (4, 1, 1)
    assert row["appeal_rate"] == 0.25 and row["reversal_rate"] == 1.0
    html = client.get("/reports/thresholds?fresh=1", headers=auth(platform)).text
    assert ("<tr><td>classifier</td><td>ML_BAD_HIGH</td><td>4</td><td>1</td><td>25.0%</td>"
            "<td>1</td><td>1</td><td>100.0%</td></tr>") in html


def test_empty_day_says_so(client, make_user, session, settings, policy):
    _, analyst = make_user("an", "analyst")
    page = client.get("/reports/class-mix?day=2001-01-01", headers=auth(analyst))
    assert page.status_code == 200
    assert "No item was decided on 2001-01-01" in page.text
    assert "No decision was recorded on 2001-01-01" in page.text
    assert "0.0%" not in page.text and "adds up to 100%" not in page.text


def test_cli_apply_is_audited_with_the_os_user(settings, session, policy, db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("the CLI is exercised once; apply_set runs on both backends above")
    import getpass

    from tests.backend.test_cli import quorum

    active = thresholds.active_threshold_set(session=session, policy=policy)
    other = thresholds.propose(session=session, policy=policy, bands=dict(active.bands),
                               reuse_distance=active.reuse_distance, auto_decide=[])
    session.commit()
    r = quorum(settings, "thresholds", "apply", str(other.version))
    assert r.returncode == 0, r.stderr
    assert f"threshold set v{other.version} is active (was v{active.version})" in r.stdout
    [entry] = _audit(settings, "thresholds.apply")
    assert entry.user_id is None
    assert entry.details == {"previous": active.version, "via": "cli",
                             "actor": f"cli:{getpass.getuser()}"}
    r = quorum(settings, "users", "add", "zed", "--role", "analyst")
    assert r.returncode == 0, r.stderr
    [created] = _audit(settings, "users.create")
    assert created.details["actor"] == f"cli:{getpass.getuser()}"


def test_not_backed_box_is_a_wrapping_block(session, settings, policy):
    from backend.reports.thresholds import build_thresholds_report
    from tests.backend.test_calibration_service import seed_pairs

    seed_pairs(session, settings, policy)
    calibration.run_calibration(session=session, kind="similarity")
    html = build_thresholds_report(session=session).html
    # a block of its own (it was an inline span inside a paragraph, clipped when it wrapped)
    assert '<div class="warn">Not backed: no threshold has a 95% wilson lower bound' in html
    assert '<span class="warn">' not in html and "<p></p>" not in html
    assert "overflow-wrap: anywhere" in html


def test_report_leads_with_what_decides_and_what_is_in_shadow(session, settings, policy):
    from backend.reports.thresholds import build_thresholds_report

    active = thresholds.active_threshold_set(session=session, policy=policy)  # defaults
    html = build_thresholds_report(session=session).html
    lead = re.search(r'<p class="warn" id="lead">(.*?)</p>', html)
    assert lead, "the report does not lead with the live / shadow sentence"
    assert lead.group(1).startswith(f"Active set v{active.version}: ")
    assert "ok.auto" in lead.group(1) and "in shadow" in lead.group(1)
    assert "nothing but rules decides automatically" in lead.group(1)
    assert html.index('id="lead"') < html.index("Threshold sets: current vs proposed")
