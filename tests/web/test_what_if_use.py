""""Use these cut-offs" on the what-if page (issue #14): a POST form (CSRF, analysts and
admins, audited ``thresholds.edit``) that proposes a new threshold set through
``editing.edit_set`` and lands, POST → redirect → GET, on that proposal's Apply
confirmation. An unbacked cut-off stays in shadow and the confirmation refuses it as ever;
a backed one can be applied."""

from __future__ import annotations

import html
import re

from sqlalchemy import select

from backend.calibration import service as calibration
from backend.calibration import thresholds
from backend.calibration.models import ThresholdSet
from backend.db import session_scope
from backend.users.models import AuditEntry
from tests.backend.conftest import ml_on  # noqa: F401  (the fixture)
from tests.web.test_web import PASSWORD, _csrf, login

USE = "/reports/thresholds/what-if/use"


def _sets(settings) -> dict[int, ThresholdSet]:  # noqa: ANN001
    with session_scope(settings.resolved_database_url) as s:
        rows = {ts.version: ts for ts in s.scalars(select(ThresholdSet))}
        s.expunge_all()
        return rows


def _edits(settings) -> list[AuditEntry]:  # noqa: ANN001
    with session_scope(settings.resolved_database_url) as s:
        rows = list(s.scalars(select(AuditEntry).where(AuditEntry.action == "thresholds.edit")
                              .order_by(AuditEntry.id)))
        s.expunge_all()
        return rows


def _use_form(html: str) -> str | None:
    m = re.search(rf'<form method="post" action="{USE}".*?</form>', html, re.S)
    return m.group(0) if m else None


def test_use_these_cut_offs_proposes_audits_and_an_unbacked_one_is_refused(
        client, make_user, session, settings, policy):
    v1 = thresholds.active_threshold_set(session=session, policy=policy)
    bands_v1 = {k: dict(v) for k, v in v1.bands.items()}
    session.commit()
    ana, _ = make_user("ana", "analyst", password=PASSWORD)
    make_user("mo", "moderator", ["MANUAL"], password=PASSWORD)
    login(client, "ana")
    plain = client.get("/reports/thresholds/what-if")
    assert plain.status_code == 200 and "Nothing is saved" not in plain.text
    assert _use_form(plain.text) is None  # nothing changed: nothing to use
    page = client.get("/reports/thresholds/what-if",
                      params={"version": v1.version, "prohibited.high": "0.97"})
    assert page.status_code == 200
    form = _use_form(page.text)
    assert form and "Use these cut-offs" in form
    assert 'name="prohibited.high" value="0.97"' in form
    assert f'name="version" value="{v1.version}"' in form and 'name="csrf"' in form
    csrf = _csrf(page.text)
    fields = {"version": str(v1.version), "prohibited.high": "0.97"}
    # no or a wrong token: refused, nothing proposed
    assert client.post(USE, data=fields).status_code == 403
    assert client.post(USE, data={**fields, "csrf": "forged"}).status_code == 403
    assert list(_sets(settings)) == [v1.version]
    # the press: a new proposal, audited, then the Apply confirmation by GET
    r = client.post(USE, data={**fields, "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303, r.text
    new = max(_sets(settings))
    assert r.headers["location"] == (f"/admin/thresholds/{new}/apply"
                                     "?back=report&new=what-if")
    ts = _sets(settings)[new]
    assert ts.state == "proposed" and ts.created_by == ana
    assert ts.bands["prohibited"] == {**bands_v1["prohibited"], "high": 0.97}
    assert {k: v for k, v in ts.bands.items() if k != "prohibited"} == {
        k: v for k, v in bands_v1.items() if k != "prohibited"}
    [entry] = _edits(settings)
    assert entry.user_id == ana and entry.target_id == str(new)
    assert entry.details == {"from": v1.version, "cuts": {"prohibited.high": 0.97},
                             "via": "web"}
    ask = client.get(r.headers["location"])
    assert ask.status_code == 200
    assert f"Apply threshold set v{new}?" in ask.text
    assert f"Threshold set v{new} is proposed (from the what-if on v{v1.version}" in ask.text
    # nothing backs 0.97: it would run in shadow, so the web refuses to apply it
    assert (f"Threshold set v{new} is not backed and was not applied: prohibited.high 0.97"
            in ask.text)
    assert 'name="confirm"' not in ask.text
    r = client.post(f"/admin/thresholds/{new}/apply",
                    data={"csrf": csrf, "back": "report", "confirm": "yes"})
    assert r.status_code == 409
    states = {v: s.state for v, s in _sets(settings).items()}
    assert states == {v1.version: "active", new: "proposed"}
    # a moderator: neither the page nor the action
    client.cookies.clear()
    login(client, "mo")
    mo_csrf = _csrf(client.get("/queues").text)
    assert client.get("/reports/thresholds/what-if").status_code == 403
    assert client.get(f"/admin/thresholds/{new}/apply").status_code == 403
    r = client.post(USE, data={**fields, "csrf": mo_csrf})
    assert r.status_code == 403 and "for analysts and admins" in r.text
    assert len(_sets(settings)) == 2 and len(_edits(settings)) == 1


def test_a_bad_value_is_a_422_page_with_a_sentence(client, make_user, session, settings,
                                                   policy):
    v1 = thresholds.active_threshold_set(session=session, policy=policy)
    session.commit()
    make_user("ana", "analyst", password=PASSWORD)
    login(client, "ana")
    csrf = _csrf(client.get("/reports/thresholds/what-if").text)
    base = {"csrf": csrf, "version": str(v1.version)}
    for value, sentence in (("lots", "prohibited.high: 'lots' is not a number"),
                            ("1.5", "label 'prohibited': need 0 <= middle <= high <= 1"),
                            ("nan", "label 'prohibited': need 0")):
        r = client.post(USE, data={**base, "prohibited.high": value})
        assert r.status_code == 422, (value, r.status_code)
        assert sentence in html.unescape(r.text), value
        assert "What-if: pick a cut-off per band" in r.text  # the form again, value kept
        assert f'name="prohibited.high" value="{value}"' in r.text
        assert _use_form(r.text) is None
    r = client.post(USE, data={**base, "prohibited.high": "0.9"})  # v1's own value
    assert r.status_code == 422 and "Nothing to use" in r.text
    r = client.post(USE, data={"csrf": csrf, "version": "0", "prohibited.high": "0.8"})
    assert r.status_code == 422 and "version" in r.text
    r = client.post(USE, data={"csrf": csrf, "version": "999", "prohibited.high": "0.8"})
    assert r.status_code == 404 and "no threshold set version 999" in r.text
    assert list(_sets(settings)) == [v1.version] and _edits(settings) == []


def test_a_backed_cut_off_stays_backed_and_can_be_applied(client, make_user, session,
                                                          settings, policy, ml_on):  # noqa: F811
    from backend.ml_adapter.service import train
    from tests.backend.test_calibration_service import _labelled

    _labelled(session, settings, policy, 140)  # 70 prohibited: enough to back 95 %
    train(session=session)
    run = calibration.run_calibration(session=session, kind="classifier")
    base = calibration.base_set(session=session, policy=policy)
    assert base.state == "proposed" and base.calibration_run_id == run.id
    old = base.backing["prohibited.high"]
    assert old["backed"] is True
    curve = calibration.run_curve(run, "prohibited")

    def assess(v: float) -> dict:
        return thresholds.assess(curve=curve, value=v, target=float(old["target"]),
                                 confidence=float(old["confidence"]),
                                 method=str(old["method"]), run_id=run.id)

    # a nearby cut-off that the same curve backs too
    value = next(v for v in (round(old["threshold"] + d, 4) for d in (-0.05, -0.1, 0.02))
                 if 0 < v < 1 and assess(v)["backed"])
    check = assess(value)
    base_version = base.version
    session.commit()
    make_user("ana", "analyst", password=PASSWORD)
    login(client, "ana")
    cuts = {"prohibited.high": str(value), "prohibited.middle": str(round(value - 0.1, 4))}
    page = client.get("/reports/thresholds/what-if", params={"version": base_version, **cuts})
    assert page.status_code == 200, page.text
    assert _use_form(page.text)
    r = client.post(USE, data={"csrf": _csrf(page.text), "version": str(base_version), **cuts},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    new = max(_sets(settings))
    ts = _sets(settings)[new]
    # edited like `quorum thresholds edit`: re-checked on the run that backed the old value
    assert ts.backing["prohibited.high"]["threshold"] == value
    assert ts.backing["prohibited.high"]["lower"] == check["lower"]
    state = {s.key: s.state for s in thresholds.band_states(ts, policy=policy)}
    assert state["prohibited.high"] == "live"
    ask = client.get(r.headers["location"])
    assert ask.status_code == 200 and "is not backed" not in ask.text
    assert 'name="confirm" value="yes"' in ask.text
    done = client.post(f"/admin/thresholds/{new}/apply", follow_redirects=False,
                       data={"csrf": _csrf(ask.text), "back": "report", "confirm": "yes"})
    assert done.status_code == 303 and done.headers["location"] == (
        f"/reports/thresholds?applied={new}")
    assert _sets(settings)[new].state == "active"
