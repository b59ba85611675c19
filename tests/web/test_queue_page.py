"""A queue's page lists its items (search, state filter, paging), analysts see any queue
read-only, and Start explains itself to someone without grants."""

from __future__ import annotations

import re

from sqlalchemy import select

from backend.db import session_scope
from backend.queues.models import Task
from tests.web.test_web import PASSWORD, _csrf, _queue, login


def _name(settings) -> str:  # noqa: ANN001
    with session_scope(settings.resolved_database_url) as s:
        return s.scalar(select(Task).order_by(Task.id)).queue.name


def _task_ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr data-task-id="(\d+)">', html)]


def test_queue_page_lists_searches_and_pages_its_items(client, make_user, settings):
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    ids = _queue(settings, "MANUAL", 30)
    _queue(settings, "MANUAL", 1, start=100, title="Vintage Leica camera", seller_id="zeiss")
    name = _name(settings)
    login(client, "mia")
    csrf = _csrf(client.get("/queues").text)
    # work one task so the list has a leased and a done one
    client.post("/work/start", data={"csrf": csrf}, follow_redirects=False)
    page = client.get(f"/queues/{name}?limit=10")
    assert page.status_code == 200 and "leased" in page.text and "mia" in page.text
    seen: list[int] = []
    url: str | None = f"/queues/{name}?limit=10"
    while url:
        html = client.get(url).text
        seen += _task_ids(html)
        m = re.search(r'href="([^"]+)" rel="next"', html)
        url = m.group(1).replace("&amp;", "&") if m else None
        assert len(seen) <= 31
    with session_scope(settings.resolved_database_url) as s:
        assert seen == list(s.scalars(select(Task.id).order_by(Task.id)))
    # search over title and seller, case-insensitively; each row links to its item page
    found = client.get(f"/queues/{name}?q=leica").text
    assert len(_task_ids(found)) == 1 and "Vintage Leica camera" in found
    assert len(_task_ids(client.get(f"/queues/{name}?q=ZEISS").text)) == 1
    assert f'href="/items/{ids[0]}"' in page.text
    leased = client.get(f"/queues/{name}?state=leased").text
    assert len(_task_ids(leased)) == 1
    assert "No item matches" in client.get(f"/queues/{name}?q=%25%25nothing").text
    assert client.get(f"/queues/{name}?state=bogus").status_code == 422
    assert client.get(f"/queues/{name}?limit=100000").status_code == 422


def test_analyst_without_grants_sees_queue_contents_read_only(client, make_user, settings):
    make_user("ana", "analyst", password=PASSWORD)
    _queue(settings, "ML_BAD_HIGH", 3)
    name = _name(settings)
    login(client, "ana")
    page = client.get(f"/queues/{name}")
    assert page.status_code == 200 and len(_task_ids(page.text)) == 3
    assert "Work this queue" not in page.text and "Decide the selected" not in page.text
    # Start says why nothing happens instead of "Well done"
    csrf = _csrf(client.get("/queues").text)
    start = client.post("/work/start", data={"csrf": csrf}, follow_redirects=False)
    assert start.headers["location"] == "/queues?notice=nogrants"
    told = client.get(start.headers["location"]).text
    assert "no queue kind is granted to you" in told and "Well done" not in told


def test_work_view_tells_an_analyst_without_grants_why(client, make_user, settings):
    make_user("ana", "analyst", password=PASSWORD)
    _queue(settings, "ML_BAD_HIGH", 2)
    login(client, "ana")
    csrf = _csrf(client.get("/queues").text)
    # the work view's next card (fetch): the empty card says why, not "Nothing left"
    r = client.post("/work/next", data={"csrf": csrf},
                    headers={"X-Requested-With": "fetch"})
    assert r.status_code == 200 and r.json()["task_id"] is None
    assert "No queue is granted to you" in r.json()["html"]
    assert "Nothing left to do here" not in r.json()["html"]
    # the same without JavaScript: back to the queues with the sentence
    r = client.post("/work/next", data={"csrf": csrf}, follow_redirects=False)
    assert r.headers["location"] == "/queues?notice=nogrants"


def test_golden_agreement_says_when_nothing_golden_was_answered(client, make_user, settings):
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    login(client, "mia")
    page = client.get("/queues").text
    assert "no golden items answered yet" in page
