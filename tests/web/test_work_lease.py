"""The work view's lease: shown, renewed on activity, and a lost lease moves on to the next
card with a sentence instead of a dead end; an answer pressed while signed out is sent
once signed in again."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from backend.db import session_scope, utcnow
from backend.queues.models import Task
from tests.web.browser import MISSING, browser_page, chromium_path, serve
from tests.web.test_web import PASSWORD, _csrf, _queue, login

FETCH = {"X-Requested-With": "fetch"}


def _start(client, csrf: str) -> int:  # noqa: ANN001
    start = client.post("/work/start", data={"csrf": csrf}, follow_redirects=False)
    return int(re.match(r"/work/(\d+)", start.headers["location"]).group(1))


def test_renew_extends_only_my_live_lease(client, make_user, settings):
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    uid, _ = make_user("otto", "moderator", ["MANUAL"], password=PASSWORD)
    _queue(settings, "MANUAL", 3)
    login(client, "mia")
    csrf = _csrf(client.get("/queues").text)
    task_id = _start(client, csrf)
    page = client.get(f"/work/{task_id}").text
    left = float(re.search(r'data-lease-left="([\d.]+)"', page).group(1))
    assert 0 < left <= settings.lease_seconds
    with session_scope(settings.resolved_database_url) as s:  # half the lease has gone
        s.execute(update(Task).where(Task.id == task_id).values(
            lease_expires_at=utcnow() + timedelta(seconds=settings.lease_seconds / 2)))
    resp = client.post(f"/work/{task_id}/renew", headers={"X-CSRF-Token": csrf, **FETCH})
    assert resp.status_code == 200, resp.text
    assert resp.json()["lease_left_s"] > settings.lease_seconds - 5
    with session_scope(settings.resolved_database_url) as s:
        deadline = s.scalar(select(Task.lease_expires_at).where(Task.id == task_id))
        assert deadline.replace(tzinfo=None) > (utcnow() + timedelta(
            seconds=settings.lease_seconds - 5)).replace(tzinfo=None)
        # the lease lapsed and otto took the task: mia's renewal must not take it back
        s.execute(update(Task).where(Task.id == task_id).values(lease_owner_id=uid))
    lost = client.post(f"/work/{task_id}/renew", headers={"X-CSRF-Token": csrf, **FETCH})
    assert lost.status_code == 409 and "no longer leased by you" in lost.json()["message"]
    with session_scope(settings.resolved_database_url) as s:
        assert s.scalar(select(Task.lease_owner_id).where(Task.id == task_id)) == uid
    # renew needs the CSRF token like every POST
    assert client.post(f"/work/{task_id}/renew", headers=FETCH).status_code == 403
    # and the work view can move on to the next card
    nxt = client.post("/work/next", data={"scope": ""}, headers={"X-CSRF-Token": csrf, **FETCH})
    assert nxt.status_code == 200 and nxt.json()["task_id"] not in (None, task_id)
    assert nxt.json()["lease_left_s"] > 0


@pytest.fixture
def lease_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    from backend.db import dispose_engines
    from backend.items.service import ingest
    from backend.migrate import upgrade
    from backend.policy import get_policy
    from backend.queues.service import enqueue
    from backend.settings import get_settings
    from backend.users.service import create_user

    url = f"sqlite:///{tmp_path / 'lease.sqlite3'}"
    monkeypatch.setenv("QUORUM_DATABASE_URL", url)
    monkeypatch.setenv("QUORUM_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("QUORUM_LEASE_SECONDS", "6")
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(url)
    rows = [{"source": "shop", "external_id": f"L{i}", "title": f"Lease item {i}",
             "description": "A plain product.", "price": 10.0 + i} for i in range(6)]
    with session_scope(url) as s:
        _, ids = ingest(session=s, rows=rows, policy=get_policy())
        enqueue(session=s, kind="MANUAL", item_ids=ids, now=utcnow(), settings=settings)
        create_user(session=s, username="mia", role="moderator", password=PASSWORD,
                    queue_kinds=["MANUAL"])
    yield url
    dispose_engines()
    get_settings.cache_clear()


def _login(page, base: str) -> None:  # noqa: ANN001
    page.fill("input[name=username]", "mia")
    page.fill("input[name=password]", PASSWORD)
    page.press("input[name=password]", "Enter")


@pytest.mark.browser
def test_lost_lease_moves_on_and_signed_out_answer_is_kept(lease_db: str) -> None:
    if chromium_path() is None:
        pytest.fail(MISSING)
    from backend.crowdwork.models import Judgment
    from backend.users.service import create_user

    with serve(lease_db) as base, browser_page() as page:
        page.goto(f"{base}/queues")
        _login(page, base)
        page.wait_for_url(f"{base}/queues")
        page.click("#start")
        page.wait_for_url(f"{base}/work/*")
        first = page.locator("#work").get_attribute("data-task-id")
        assert "reserved for you" in page.inner_text("#lease")
        # activity renews the lease: keep moving for longer than the 6 s lease
        for _ in range(10):
            page.mouse.move(100 + _ * 5, 200)
            page.wait_for_timeout(900)
        assert page.locator("#work").get_attribute("data-task-id") == first
        # idle: a warning first
        page.wait_for_function(
            "() => document.getElementById('status').textContent.includes('press any key')",
            timeout=10000)
        # the lease runs out and someone else takes the task: the next card comes, with a
        # sentence, instead of a dead end
        with session_scope(lease_db) as s:
            other = create_user(session=s, username="otto", role="moderator",
                                password=PASSWORD, queue_kinds=["MANUAL"])
            s.flush()
            s.execute(update(Task).where(Task.id == int(first)).values(
                lease_owner_id=other.id, lease_expires_at=utcnow() + timedelta(minutes=5)))
        page.wait_for_function(
            "old => { const t = document.getElementById('work').dataset.taskId;"
            " return t && t !== old; }", arg=first, timeout=15000)
        assert "ran out" in page.inner_text("#status")
        second = page.locator("#work").get_attribute("data-task-id")
        assert second and second != first
        # signed out mid-work (the session cookie is gone): the key press is not lost
        page.context.clear_cookies()
        page.keyboard.press("5")  # fraud
        page.wait_for_url(f"{base}/login*")
        _login(page, base)
        page.wait_for_url(f"{base}/work/*")
        page.wait_for_function(  # a function, not an expression: the CSP forbids eval
            "() => document.getElementById('status').textContent.includes('saved')",
            timeout=10000)
        assert "signed in again" in page.inner_text("#status")
    with session_scope(lease_db) as s:
        labels = dict(s.execute(select(Judgment.task_id, Judgment.label)).all())
    assert labels.get(int(second)) == "fraud"
    assert int(first) not in labels


@pytest.mark.browser
def test_cluster_keys_and_undo_key_in_a_browser(lease_db: str) -> None:
    if chromium_path() is None:
        pytest.fail(MISSING)
    from backend.crowdwork.models import Judgment
    from backend.decisions.models import DecisionEvent

    with session_scope(lease_db) as s:  # make the items one cluster by title
        from backend.items.models import Item

        s.execute(update(Item).values(title="Replica watch"))
    with serve(lease_db) as base, browser_page() as page:
        page.goto(f"{base}/queues")
        _login(page, base)
        page.wait_for_url(f"{base}/queues")
        name = page.locator("table.queues td a").first.inner_text()
        page.goto(f"{base}/queues/{name}")
        boxes = page.locator("form.cluster input[name=task_ids]")
        assert boxes.count() == 6
        assert page.locator("form.cluster button.decide").is_disabled()
        boxes.first.focus()
        page.keyboard.press("a")
        assert "6 of 6 ticked" in page.inner_text("form.cluster .selected-count")
        page.keyboard.press("n")
        assert "0 of 6" in page.inner_text("form.cluster .selected-count")
        page.keyboard.press("x")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("x")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("x")
        page.keyboard.press("ArrowLeft")  # and back: the fourth stays unticked
        assert "3 of 6" in page.inner_text("form.cluster .selected-count")
        page.wait_for_timeout(300)
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert "3 items decided as" in page.inner_text("p.message")
        with session_scope(lease_db) as s:
            rows = s.execute(select(Judgment.task_id, Judgment.time_spent_ms)
                             .order_by(Judgment.task_id)).all()
        assert [r[0] for r in rows] == [1, 2, 4]
        assert all(r[1] is not None and r[1] > 0 for r in rows)
        # the work view: answer, then U brings the item back
        page.goto(f"{base}/queues")
        page.click("#start")
        page.wait_for_url(f"{base}/work/*")
        first = page.locator("#work").get_attribute("data-task-id")
        page.keyboard.press("4")
        page.wait_for_function(
            "old => { const t = document.getElementById('work').dataset.taskId;"
            " return t && t !== old; }", arg=first)
        page.keyboard.press("u")
        page.wait_for_function(
            "old => document.getElementById('work').dataset.taskId === old", arg=first)
        assert "Undid your verdict" in page.inner_text("#status")
    with session_scope(lease_db) as s:
        assert s.scalar(select(DecisionEvent.source).order_by(DecisionEvent.id.desc())
                        .limit(1)) == "undo"
