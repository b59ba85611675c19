"""The moderator's day in a real browser: Debian's Chromium driven by Playwright.

Logs in, works 10 tasks with the keyboard alone, checks the verdicts in the database,
checks that another's queue and the analyst pages answer 403, saves screenshots under
``test-artifacts/web/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from tests.web.browser import MISSING, browser_page, chromium_path, serve

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
PASSWORD = "browser-pass-1"


@pytest.fixture
def app_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """A migrated SQLite database with two moderators, items with photos, two queues."""
    from PIL import Image

    from backend.db import dispose_engines, session_scope, utcnow
    from backend.items.service import ingest
    from backend.migrate import upgrade
    from backend.policy import get_policy
    from backend.queues.service import enqueue
    from backend.settings import get_settings
    from backend.users.service import create_user

    data_dir = tmp_path / "var"
    url = f"sqlite:///{tmp_path / 'browser.sqlite3'}"
    monkeypatch.setenv("QUORUM_DATABASE_URL", url)
    monkeypatch.setenv("QUORUM_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(url)
    photos = data_dir / "demo" / "images"
    photos.mkdir(parents=True)
    for n, colour in enumerate(["#c53030", "#2457c5", "#1f8a4c"]):
        Image.new("RGB", (320 + 80 * n, 240), colour).save(photos / f"p{n}.jpg")
    rows = [{"source": "shop", "external_id": f"B{i}", "title": f"Browser item {i}",
             "description": "A plain product for the browser test.", "price": 10.0 + i,
             "currency": "USD", "seller_id": f"S{i % 3}", "category": "home",
             "url": f"https://shop.example/item/B{i}",
             **({"image": str(photos / f"p{i % 3}.jpg")} if i % 4 else {})}
            for i in range(14)]
    with session_scope(url) as s:
        _, ids = ingest(session=s, rows=rows, policy=get_policy())
        enqueue(session=s, kind="MANUAL", item_ids=ids[:12], now=utcnow(), settings=settings)
        enqueue(session=s, kind="ML_BAD_HIGH", item_ids=ids[12:], now=utcnow(),
                settings=settings)
        create_user(session=s, username="mia", role="moderator", password=PASSWORD,
                    queue_kinds=["MANUAL"])
        create_user(session=s, username="otto", role="moderator", password=PASSWORD,
                    queue_kinds=["ML_BAD_HIGH"])
    yield url
    dispose_engines()
    get_settings.cache_clear()


def test_moderator_works_ten_tasks_by_keyboard(app_db: str) -> None:
    if chromium_path() is None:
        pytest.fail(MISSING)
    from backend.crowdwork.models import Judgment
    from backend.db import session_scope
    from backend.queues.models import Queue

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    keys = ["1", "2", "3", "4", "5", "0", "1", "1", "4", "5"]
    labels = {"1": "ok", "2": "restricted", "3": "adult", "4": "prohibited", "5": "fraud",
              "0": "not_found"}
    with serve(app_db) as base, browser_page() as page:
        blocked: list[str] = []  # the CSP (no inline script or style) must block nothing
        page.on("console", lambda m: blocked.append(m.text)
                if "Content Security Policy" in m.text else None)
        page.goto(f"{base}/queues")
        assert "/login" in page.url
        page.wait_for_selector("input[name=username]:focus")  # autofocus, then type
        page.keyboard.type("mia")
        page.keyboard.press("Tab")
        page.keyboard.type("wrong-password")
        page.keyboard.press("Enter")
        page.wait_for_selector("text=Wrong username or password")
        assert page.input_value("input[name=username]") == "mia"  # kept after a failure
        page.fill("input[name=password]", PASSWORD)
        page.focus("input[name=password]")
        with page.expect_navigation(url=f"{base}/queues"):
            page.keyboard.press("Enter")
        assert page.locator("table.queues").inner_text().count("MANUAL_") == 1
        assert "ML_BAD_HIGH" not in page.content()
        page.screenshot(path=str(ARTIFACTS / "queues.png"))

        page.keyboard.press("Enter")  # "Start" has the focus
        page.wait_for_url(f"{base}/work/*")
        card = page.locator("#card-slot .item-card")
        box = card.bounding_box()
        page.screenshot(path=str(ARTIFACTS / "work.png"))
        seen = []
        for n, key in enumerate(keys):
            task_id = page.locator("#work").get_attribute("data-task-id")
            seen.append(int(task_id))
            if n == 2:  # a comment, typed without the mouse
                page.keyboard.press("c")
                page.keyboard.type("looks like a replica")
                page.keyboard.press("Escape")
            page.wait_for_timeout(30)
            page.keyboard.press(key)
            page.wait_for_function(
                "old => document.getElementById('work').dataset.taskId !== old", arg=task_id)
            assert card.bounding_box() == box, "the card moved or changed size between items"
        page.screenshot(path=str(ARTIFACTS / "work-after-10.png"))
        assert page.locator("#items-today").inner_text() == "10"

        with session_scope(app_db) as s:
            rows = s.execute(select(Judgment.task_id, Judgment.label, Judgment.time_spent_ms,
                                    Judgment.comment).order_by(Judgment.id)).all()
            other = s.scalar(select(Queue.name).where(Queue.kind == "ML_BAD_HIGH"))
        assert [r.task_id for r in rows] == seen
        assert [r.label for r in rows] == [labels[k] for k in keys]
        assert all(r.time_spent_ms is not None and r.time_spent_ms >= 0 for r in rows)
        assert rows[2].comment == "looks like a replica"

        for path in (f"/queues/{other}", "/admin/rules", "/admin/users", "/reports"):
            resp = page.goto(base + path)
            assert resp is not None and resp.status == 403, path
            assert "Not allowed" in page.content()
        page.screenshot(path=str(ARTIFACTS / "forbidden.png"))

        page.goto(f"{base}/stats")
        assert page.locator("#stat-today").inner_text() == "10"
        page.screenshot(path=str(ARTIFACTS / "stats.png"))
        assert not blocked, blocked
