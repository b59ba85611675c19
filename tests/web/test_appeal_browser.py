"""An appeal worked in Debian's Chromium: the work view shows the appeal (who, against
which decision, the reason), a key reverses it with the moderator's comment as its reasons,
and the item page's timeline shows the automatic decision, the appeal and its outcome."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from backend.db import session_scope, utcnow
from tests.web.browser import MISSING, browser_page, chromium_path, serve
from tests.web.test_ux import _rgb, contrast

pytestmark = pytest.mark.browser
PASSWORD = "appeal-pass-1"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"


@pytest.fixture
def appeal_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    from backend.appeals.service import open_appeal
    from backend.db import dispose_engines
    from backend.decisions.service import NewDecision, record_decisions
    from backend.items.service import ingest
    from backend.migrate import upgrade
    from backend.policy import get_policy
    from backend.settings import get_settings
    from backend.users.service import create_user

    url = f"sqlite:///{tmp_path / 'appeal.sqlite3'}"
    monkeypatch.setenv("QUORUM_DATABASE_URL", url)
    monkeypatch.setenv("QUORUM_DATA_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(url)
    with session_scope(url) as s:
        _, [item] = ingest(session=s, policy=get_policy(), rows=[{
            "source": "shop", "external_id": "A1", "title": "Vintage camera",
            "description": "Working, with its case.", "price": 120.0, "currency": "EUR"}])
        record_decisions(session=s, now=utcnow(), decisions=[NewDecision(
            item_id=item, label="fraud", source="classifier", model_id="lr-text-3",
            threshold_set_version=2, confidence=0.97, details={"band": "ML_BAD_HIGH"})])
        open_appeal(session=s, item_id=item, reason="I own this camera; receipt attached",
                    appellant="seller S9", external_ref="case-77", now=utcnow(),
                    settings=settings)
        create_user(session=s, username="otto", role="moderator", password=PASSWORD,
                    queue_kinds=["APPEALS"])
    yield url, item
    dispose_engines()
    get_settings.cache_clear()


def test_an_appeal_is_reversed_in_the_work_view_and_shown_on_the_timeline(appeal_db) -> None:  # noqa: ANN001
    if chromium_path() is None:
        pytest.fail(MISSING)
    from backend.appeals.models import Appeal
    from backend.decisions.models import ItemStatus

    url, item = appeal_db
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with serve(url) as base, browser_page() as page:
        page.goto(f"{base}/login")
        page.fill("input[name=username]", "otto")
        page.fill("input[name=password]", PASSWORD)
        page.press("input[name=password]", "Enter")
        page.wait_for_url(f"{base}/queues")
        page.click("#start")
        page.wait_for_url(f"{base}/work/*")
        appeal = page.locator("#card-slot section.appeal")
        assert "Appeal by seller S9" in appeal.inner_text()
        assert "against fraud (classifier)" in appeal.inner_text()
        assert "I own this camera; receipt attached" in appeal.inner_text()
        page.screenshot(path=str(ARTIFACTS / "appeal.png"))
        task_id = page.locator("#work").get_attribute("data-task-id")
        page.keyboard.press("c")  # the comment is the outcome's reasons
        page.keyboard.type("receipt matches the listing")
        page.keyboard.press("Escape")
        page.keyboard.press("1")  # ok: another label than the appealed one reverses it
        page.wait_for_function(
            "old => document.getElementById('work').dataset.taskId !== old", arg=task_id)
        page.wait_for_selector("text=Nothing left to do here")
        page.goto(f"{base}/items/{item}")
        timeline = page.locator("ol.timeline").inner_text()
        # the "superseded" badge is readable (it was grey text on a grey pill)
        fg, bg = page.evaluate("""() => { const b = document.querySelector(
            'ol.timeline li.superseded .badge'); const cs = getComputedStyle(b);
            return [cs.color, cs.backgroundColor]; }""")
        assert contrast(_rgb(fg), _rgb(bg)) >= 4.5, (fg, bg)
        page.screenshot(path=str(ARTIFACTS / "item-timeline.png"), full_page=True)
    order = ["Decided fraud (classifier)", "Appeal opened by seller S9",
             "Decided ok (moderator)", "Appeal reversed"]
    positions = [timeline.find(t) for t in order]
    assert -1 not in positions and positions == sorted(positions), (positions, timeline)
    assert "I own this camera; receipt attached" in timeline
    assert "receipt matches the listing" in timeline
    assert "reference: case-77" in timeline and "by: otto" in timeline
    with session_scope(url) as s:
        ap = s.scalar(select(Appeal))
        assert ap.state == "reversed" and ap.outcome_reasons == "receipt matches the listing"
        assert s.get(ItemStatus, item).label == "ok"
