"""The web UI through the TestClient: login, cookies, CSRF, 403s, verdicts in the database."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from backend.crowdwork.models import Judgment
from backend.db import session_scope, utcnow
from backend.decisions.models import DecisionEvent
from backend.items.service import ingest
from backend.policy import get_policy
from backend.queues import service as queues
from backend.queues.models import Task
from backend.users.models import AuditEntry, User
from tests.conftest import item_row

PASSWORD = "secret-pass-1"


def _queue(settings, kind: str, n: int, start: int = 0, **over) -> list[int]:
    with session_scope(settings.resolved_database_url) as s:
        _, ids = ingest(session=s, rows=[item_row(i, **over) for i in range(start, start + n)],
                        policy=get_policy())
        queues.enqueue(session=s, kind=kind, item_ids=ids, now=utcnow(), settings=settings)
        return ids


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def login(client, username: str, password: str = PASSWORD):  # noqa: ANN201
    page = client.get("/login")
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf": _csrf(page.text), "next": "/queues"},
                       follow_redirects=False)


@pytest.fixture
def mod(make_user):  # noqa: ANN001, ANN201
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    make_user("otto", "moderator", ["ML_BAD_HIGH"], password=PASSWORD)
    return "mia"


def test_login_sets_a_signed_httponly_lax_cookie_and_logout_clears_it(client, mod, settings):
    resp = login(client, "mia")
    assert resp.status_code == 303 and resp.headers["location"] == "/queues"
    cookie = next(h for h in resp.headers.get_list("set-cookie")
                  if h.startswith("quorum_session="))
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    page = client.get("/queues")
    assert page.status_code == 200 and "Today's queues" in page.text and "mia" in page.text
    # a tampered cookie is no session
    value = client.cookies.get("quorum_session")
    client.cookies.clear()
    client.cookies.set("quorum_session", value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    assert client.get("/queues", follow_redirects=False).status_code == 303
    client.cookies.clear()
    login(client, "mia")
    page = client.get("/queues")
    out = client.post("/logout", data={"csrf": _csrf(page.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert 'quorum_session=""' in out.headers["set-cookie"]
    assert "quorum_session" not in client.cookies
    assert client.get("/queues", follow_redirects=False).headers["location"].startswith("/login")
    with session_scope(settings.resolved_database_url) as s:
        actions = list(s.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
    assert actions == ["web.login", "web.login", "web.logout"]


def test_wrong_password_shows_the_form_again_with_401(client, mod):
    resp = login(client, "mia", "not-the-password")
    assert resp.status_code == 401
    assert "Wrong username or password" in resp.text and "<form" in resp.text
    assert "quorum_session" not in client.cookies
    assert login(client, "nobody").status_code == 401


def test_login_without_its_csrf_token_is_refused(client, mod):
    client.get("/login")
    resp = client.post("/login", data={"username": "mia", "password": PASSWORD, "csrf": "x"},
                       follow_redirects=False)
    assert resp.status_code == 403 and "quorum_session" not in client.cookies


def test_posts_without_the_session_csrf_token_are_refused(client, mod, settings):
    _queue(settings, "MANUAL", 2)
    login(client, "mia")
    assert client.post("/work/start", data={}).status_code == 403
    assert client.post("/work/start", data={"csrf": "forged"}).status_code == 403
    assert client.post("/work/start", headers={"X-CSRF-Token": "forged"}).status_code == 403
    with session_scope(settings.resolved_database_url) as s:
        assert s.scalar(select(Task).where(Task.state == "leased")) is None


def test_queues_page_lists_only_granted_queues(client, mod, settings):
    _queue(settings, "MANUAL", 2)
    _queue(settings, "ML_BAD_HIGH", 2, start=10)
    login(client, "mia")
    page = client.get("/queues").text
    assert "MANUAL_" in page and "ML_BAD_HIGH_" not in page
    assert re.search(r"0 / 2", page)


def test_moderator_gets_403_for_another_queue_and_analyst_pages(client, mod, settings):
    ids = _queue(settings, "ML_BAD_HIGH", 1)
    login(client, "mia")
    with session_scope(settings.resolved_database_url) as s:
        name = s.scalar(select(Task)).queue.name
    page = client.get("/queues")
    assert client.get(f"/queues/{name}").status_code == 403
    resp = client.post("/work/start", data={"csrf": _csrf(page.text), "queue": name})
    assert resp.status_code == 403 and "Not allowed" in resp.text
    for path in ("/admin/rules", "/admin/users", "/admin/audit", "/reports",
                 "/admin/thresholds", "/reports/crowd"):
        r = client.get(path)
        assert r.status_code == 403, path
        assert "text/html" in r.headers["content-type"]
    assert client.get(f"/items/{ids[0]}/image").status_code == 404


def test_work_a_task_verdict_lands_in_the_database(client, mod, settings):
    ids = _queue(settings, "MANUAL", 3)
    login(client, "mia")
    csrf = _csrf(client.get("/queues").text)
    start = client.post("/work/start", data={"csrf": csrf}, follow_redirects=False)
    assert start.status_code == 303
    work_url = start.headers["location"]
    task_id = int(re.match(r"/work/(\d+)", work_url).group(1))
    page = client.get(work_url)
    assert page.status_code == 200 and "Item 0" in page.text
    for key in ("<kbd>1</kbd>", "<kbd>5</kbd>", "<kbd>0</kbd>", "Suspect to fraud"):
        assert key in page.text
    resp = client.post(f"/work/{task_id}/verdict",
                       data={"label": "fraud", "comment": "absurd price",
                             "time_spent_ms": "4321", "scope": ""},
                       headers={"X-CSRF-Token": csrf, "X-Requested-With": "fetch"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["task_id"] != task_id and "Item 1" in body["html"] and body["items_today"] == 1
    with session_scope(settings.resolved_database_url) as s:
        j = s.scalar(select(Judgment).where(Judgment.task_id == task_id))
        assert (j.label, j.time_spent_ms, j.comment, j.item_id) == \
            ("fraud", 4321, "absurd price", ids[0])
        ev = s.scalar(select(DecisionEvent).where(DecisionEvent.task_id == task_id))
        assert ev.label == "fraud" and ev.source == "moderator"
    # an unknown label is refused as JSON for fetch, nothing written
    bad = client.post(f"/work/{body['task_id']}/verdict", data={"label": "nonsense"},
                      headers={"X-CSRF-Token": csrf, "X-Requested-With": "fetch"})
    assert bad.status_code == 422 and "unknown label" in bad.json()["message"]
    # skip returns the next card
    skip = client.post(f"/work/{body['task_id']}/skip", data={},
                       headers={"X-CSRF-Token": csrf, "X-Requested-With": "fetch"})
    assert skip.status_code == 200 and "Item 2" in skip.json()["html"]
    # without JavaScript a verdict redirects to the next task
    last = skip.json()["task_id"]
    plain = client.post(f"/work/{last}/verdict", data={"label": "ok", "csrf": csrf},
                        follow_redirects=False)
    assert plain.status_code == 303 and plain.headers["location"] == "/queues?notice=empty"


def test_another_moderators_task_is_not_shown(client, mod, settings, make_user):
    _queue(settings, "MANUAL", 2)
    make_user("max", "moderator", ["MANUAL"], password=PASSWORD)
    login(client, "mia")
    csrf = _csrf(client.get("/queues").text)
    task_url = client.post("/work/start", data={"csrf": csrf},
                           follow_redirects=False).headers["location"]
    client.cookies.clear()
    login(client, "max")
    assert client.get(task_url).status_code == 409


def test_work_view_offers_item_cards_only_pair_tasks_stay_for_the_api(
        client, make_user, settings):
    make_user("pia", "moderator", ["PAIRS", "MANUAL"], password=PASSWORD)
    with session_scope(settings.resolved_database_url) as s:
        _, ids = ingest(session=s, rows=[item_row(i) for i in range(3)], policy=get_policy())
        [pair] = queues.enqueue(session=s, kind="PAIRS", item_ids=[ids[0]], now=utcnow(),
                                settings=settings, task_type="pair", priority=99,
                                payloads=[{"other_item_id": ids[1], "distance": 0.1}])
        [item_task] = queues.enqueue(session=s, kind="MANUAL", item_ids=[ids[2]],
                                     now=utcnow(), settings=settings)
    login(client, "pia")
    csrf = _csrf(client.get("/queues").text)
    # the pair queue has the higher priority, but the work view skips it for the item card
    start = client.post("/work/start", data={"csrf": csrf}, follow_redirects=False)
    assert start.headers["location"] == f"/work/{item_task}"
    only_pairs = client.post("/work/start", data={"csrf": csrf, "queue": _name(settings, pair)},
                             follow_redirects=False)
    assert only_pairs.headers["location"] == "/queues?notice=empty"
    with session_scope(settings.resolved_database_url) as s:
        assert s.get(Task, pair).state == "pending"  # not leased by the web view
        user = s.scalar(select(User).where(User.username == "pia"))
        leased = queues.lease_next(session=s, user=user, now=utcnow(), settings=settings,
                                   queue=s.get(Task, pair).queue)
        assert leased is not None and leased.id == pair  # the API path still offers it
    page = client.get(f"/work/{pair}")
    assert page.status_code == 422 and "answer it through the API" in page.text


def _name(settings, task_id: int) -> str:
    with session_scope(settings.resolved_database_url) as s:
        return s.get(Task, task_id).queue.name


def test_item_image_is_served_only_from_the_data_dir(client, mod, settings, tmp_path):
    from PIL import Image

    inside = settings.data_dir / "imgs" / "a.png"
    inside.parent.mkdir(parents=True)
    Image.new("RGB", (4, 4), "red").save(inside)
    outside = tmp_path / "secret.png"
    Image.new("RGB", (4, 4), "blue").save(outside)
    images = [str(inside), str(outside), str(settings.data_dir / ".." / "secret.png")]
    ok_id, out_id, dots_id = (_queue(settings, "MANUAL", 1, start=i, image=img)[0]
                              for i, img in enumerate(images))
    login(client, "mia")
    r = client.get(f"/items/{ok_id}/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert client.get(f"/items/{out_id}/image").status_code == 404
    assert client.get(f"/items/{dots_id}/image").status_code == 404
    assert client.get("/static/..%2Fsecurity.py").status_code == 404
    assert client.get("/static/work.js").status_code == 200


def test_stats_count_today_median_and_golden_agreement(client, mod, settings):
    _queue(settings, "MANUAL", 2, is_golden=True, golden_label="ok")
    login(client, "mia")
    csrf = _csrf(client.get("/queues").text)
    hdr = {"X-CSRF-Token": csrf, "X-Requested-With": "fetch"}
    tid = int(client.post("/work/start", data={"csrf": csrf}, follow_redirects=False)
              .headers["location"].split("/")[-1])
    tid = client.post(f"/work/{tid}/verdict", data={"label": "ok", "time_spent_ms": "2000"},
                      headers=hdr).json()["task_id"]
    client.post(f"/work/{tid}/verdict", data={"label": "fraud", "time_spent_ms": "4000"},
                headers=hdr)
    page = client.get("/stats").text
    assert 'id="stat-today">2<' in page
    assert 'id="stat-median">3.0 s<' in page
    assert 'id="stat-golden">50%<' in page


def test_analyst_changes_a_rule_mode_and_backtests_with_audit(client, make_user, settings):
    from backend.rules.schemas import RuleCreate
    from backend.rules.service import create_rule

    make_user("ana", "analyst", password=PASSWORD)
    with session_scope(settings.resolved_database_url) as s:
        rule_id = create_rule(session=s, data=RuleCreate(
            name="cheap", expression="item.price < 1.0", action="decide", label="fraud"),
            policy=get_policy()).id
    login(client, "ana")
    page = client.get("/admin/rules")
    assert page.status_code == 200 and "cheap" in page.text
    csrf = _csrf(page.text)
    assert client.post(f"/admin/rules/{rule_id}/mode", data={"mode": "shadow", "csrf": csrf},
                       follow_redirects=False).status_code == 303
    bt = client.post(f"/admin/rules/{rule_id}/backtest", data={"csrf": csrf},
                     follow_redirects=False)
    assert bt.status_code == 303 and "?run=" in bt.headers["location"]  # POST → redirect
    page = client.get(bt.headers["location"])
    assert page.status_code == 200 and "Backtest of cheap v2" in page.text
    assert client.get("/admin/users").status_code == 403  # admins only
    with session_scope(settings.resolved_database_url) as s:
        acts = [(a.action, a.details) for a in s.scalars(select(AuditEntry)
                                                         .order_by(AuditEntry.id))]
    assert ("rule.mode", {"from": "draft", "to": "shadow", "version": 2}) in acts
    assert any(a == "rule.backtest" for a, _ in acts)


def test_admin_edits_grants_with_audit(client, make_user, mod, settings):
    make_user("root", "admin", password=PASSWORD)
    login(client, "root")
    page = client.get("/admin/users")
    assert page.status_code == 200 and "mia" in page.text
    from backend.users.service import get_user

    with session_scope(settings.resolved_database_url) as s:
        mia_id = get_user(session=s, username="mia").id
    # a kind nobody routes to is refused with a sentence; nothing changes
    bad = client.post(f"/admin/users/{mia_id}/grants",
                      data={"kinds": "manual, GMV, MANUL", "csrf": _csrf(page.text)})
    assert bad.status_code == 422
    assert "grants were not changed: MANUL is not a known queue kind" in bad.text
    # first press: what is added and taken away, asking for confirmation
    ask = client.post(f"/admin/users/{mia_id}/grants",
                      data={"kinds": "manual, GMV", "csrf": _csrf(page.text)})
    assert ask.status_code == 200 and "Change the queue kinds mia may work?" in ask.text
    assert "<strong>GMV</strong>" in ask.text
    with session_scope(settings.resolved_database_url) as s:
        assert get_user(session=s, username="mia").granted_kinds == {"MANUAL"}
    r = client.post(f"/admin/users/{mia_id}/grants", follow_redirects=False,
                    data={"kinds": "GMV MANUAL", "csrf": _csrf(page.text), "confirm": "yes"})
    assert r.status_code == 303
    with session_scope(settings.resolved_database_url) as s:
        assert get_user(session=s, username="mia").granted_kinds == {"MANUAL", "GMV"}
        entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "user.grants"))
        assert entry.details == {"from": ["MANUAL"], "to": ["GMV", "MANUAL"], "via": "web"}
    assert "user.grants" in client.get("/admin/audit").text


def test_cluster_review_decides_each_selected_item(client, mod, settings):
    _queue(settings, "MANUAL", 3, title="Replica watch")
    _queue(settings, "MANUAL", 1, start=5, title="Something else")
    login(client, "mia")
    with session_scope(settings.resolved_database_url) as s:
        tasks = list(s.scalars(select(Task).order_by(Task.id)))
        name = tasks[0].queue.name
        dup_ids = [t.id for t in tasks[:3]]
    page = client.get(f"/queues/{name}")
    assert page.status_code == 200 and "3 items" in page.text
    r = client.post(f"/queues/{name}/clusters/decide",
                    data={"csrf": _csrf(page.text), "label": "prohibited",
                          "task_ids": [str(i) for i in dup_ids[:2]]}, follow_redirects=False)
    assert r.status_code == 303
    with session_scope(settings.resolved_database_url) as s:
        events = list(s.scalars(select(DecisionEvent).where(DecisionEvent.source == "moderator")))
        assert sorted(e.task_id for e in events) == dup_ids[:2]
        assert {e.label for e in events} == {"prohibited"}
        assert s.get(Task, dup_ids[2]).state == "pending"


def test_analyst_applies_and_restores_a_threshold_set_with_audit(client, make_user, settings):
    from backend.calibration import thresholds
    from backend.calibration.models import ThresholdSet

    make_user("ana", "analyst", password=PASSWORD)
    with session_scope(settings.resolved_database_url) as s:
        active = thresholds.active_threshold_set(session=s, policy=get_policy())
        # nothing unbacked changes (automation switched off): it may be applied from the page
        proposed = thresholds.propose(session=s, policy=get_policy(), bands=dict(active.bands),
                                      reuse_distance=active.reuse_distance, auto_decide=[],
                                      note="test")
        v1, v2 = active.version, proposed.version
    login(client, "ana")
    page = client.get("/admin/thresholds")
    assert page.status_code == 200 and f"v{v2}" in page.text and "Apply" in page.text
    assert client.post(f"/admin/thresholds/{v2}/apply", data={}).status_code == 403  # no CSRF
    ask = client.post(f"/admin/thresholds/{v2}/apply", data={"csrf": _csrf(page.text)})
    assert ask.status_code == 200 and f"Apply threshold set v{v2}?" in ask.text  # confirm
    r = client.post(f"/admin/thresholds/{v2}/apply", follow_redirects=False,
                    data={"csrf": _csrf(page.text), "confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"] == f"/admin/thresholds?applied={v2}"
    with session_scope(settings.resolved_database_url) as s:
        states = dict(s.execute(select(ThresholdSet.version, ThresholdSet.state)).tuples().all())
        assert states == {v1: "retired", v2: "active"}
        entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "thresholds.apply"))
        assert entry.target_id == str(v2) and entry.details == {"previous": v1, "via": "web"}
    page = client.get(f"/admin/thresholds?applied={v2}")
    assert "Restore" in page.text and f"Threshold set v{v2} is active" in page.text
    client.post(f"/admin/thresholds/{v1}/apply", data={"csrf": _csrf(page.text),
                                                       "confirm": "yes"})
    with session_scope(settings.resolved_database_url) as s:
        assert thresholds.active_threshold_set(session=s, policy=get_policy()).version == v1
    assert client.post("/admin/thresholds/999/apply",
                       data={"csrf": _csrf(page.text)}).status_code == 404


def test_crowd_page_lists_pools(client, make_user, settings):
    make_user("ana", "analyst", password=PASSWORD)
    login(client, "ana")
    r = client.get("/reports/crowd")
    assert r.status_code == 200 and "No pool yet" in r.text


def test_analyst_edits_a_rule_condition_bad_ones_refused(client, make_user, settings):
    from backend.rules.models import Rule
    from backend.rules.schemas import RuleCreate
    from backend.rules.service import create_rule

    make_user("ana", "analyst", password=PASSWORD)
    with session_scope(settings.resolved_database_url) as s:
        rule_id = create_rule(session=s, policy=get_policy(), data=RuleCreate(
            name="cheap", expression="has(item.price) && item.price < 1.0", action="decide",
            label="fraud")).id
    login(client, "ana")
    csrf = _csrf(client.get("/admin/rules").text)
    r = client.post(f"/admin/rules/{rule_id}/edit",
                    data={"csrf": csrf, "expression": "item.price <", "position": "5"})
    assert r.status_code == 422 and "column 13" in r.text
    r = client.post(f"/admin/rules/{rule_id}/edit", follow_redirects=False, data={
        "csrf": csrf, "expression": "has(item.price) && item.price < 2.0", "position": "5"})
    assert r.status_code == 303
    with session_scope(settings.resolved_database_url) as s:
        rule = s.get(Rule, rule_id)
        assert (rule.expression, rule.position, rule.version) == (
            "has(item.price) && item.price < 2.0", 5, 2)
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "rule.edit"))
