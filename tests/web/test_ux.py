"""What a person sees, checked in Debian's Chromium: the API reference pages work offline,
the focus ring is visible (≥ 3:1 against its background), the work view has a heading, and
the analyst pages fit a 1024 px wide window."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.web.browser import MISSING, browser_page, chromium_path, serve

pytestmark = pytest.mark.browser
PASSWORD = "ux-pass-1"


def _luminance(rgb: tuple[float, float, float]) -> float:
    def chan(c: float) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (chan(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _rgb(css: str) -> tuple[float, float, float]:
    inside = css[css.index("(") + 1:css.index(")")].replace(",", " ").split()
    r, g, b = (float(v) for v in inside[:3])
    return r, g, b


@pytest.fixture
def ux_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    from dataclasses import asdict

    from backend.crowdwork.models import CrowdPool
    from backend.db import dispose_engines, session_scope, utcnow
    from backend.items.service import ingest
    from backend.migrate import upgrade
    from backend.policy import get_policy
    from backend.queues.models import Queue, Task
    from backend.queues.service import enqueue
    from backend.settings import get_settings
    from backend.users.service import create_user
    from crowd.config import CrowdConfig

    url = f"sqlite:///{tmp_path / 'ux.sqlite3'}"
    monkeypatch.setenv("QUORUM_DATABASE_URL", url)
    monkeypatch.setenv("QUORUM_DATA_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(url)
    rows = [{"source": "shop", "external_id": f"U{i}", "title": f"UX item {i}",
             "description": "A plain product.", "price": 10.0 + i, "currency": "USD"}
            for i in range(3)]
    with session_scope(url) as s:
        _, ids = ingest(session=s, rows=rows, policy=get_policy())
        task_ids = enqueue(session=s, kind="NEW_PRODUCTS", item_ids=ids[:2], now=utcnow(),
                           settings=settings)
        queue_id = s.get(Task, task_ids[0]).queue_id
        s.get(Queue, queue_id).name = "NEW_PRODUCTS_2026-12-01_1"  # the demo's widest name
        enqueue(session=s, kind="MANUAL", item_ids=ids[2:], now=utcnow(), settings=settings)
        for n in range(3):  # the demo's pools, as wide as they get
            s.add(CrowdPool(queue_id=queue_id, state="tasks_uploaded",
                            toloka_pool_id=f"100000{n}", toloka_project_id="1",
                            aggregation_method="ds", task_count=12345, answers_count=987654,
                            spend=12345.67, config={"crowd": asdict(CrowdConfig())}))
        create_user(session=s, username="mia", role="moderator", password=PASSWORD,
                    queue_kinds=["MANUAL"])
        create_user(session=s, username="ana", role="admin", password=PASSWORD)
    yield url
    dispose_engines()
    get_settings.cache_clear()


def _login(page, base: str, name: str) -> None:  # noqa: ANN001
    page.goto(f"{base}/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.press("input[name=password]", "Enter")
    page.wait_for_url(lambda u: "/login" not in u)


def test_api_reference_pages_render_without_network(ux_db: str) -> None:
    if chromium_path() is None:
        pytest.fail(MISSING)
    with serve(ux_db) as base, browser_page() as page:
        outside: list[str] = []
        # what a blank page comes from: scripts, styles, fonts or the spec fetched elsewhere
        # (ReDoc's "by Redocly" footer image points at its site; the CSP blocks images
        # from outside, and the page does not need it)
        page.on("request", lambda r: outside.append(r.url)
                if r.resource_type in ("script", "stylesheet", "font", "fetch", "xhr")
                and not r.url.startswith((base, "blob:", "data:")) else None)
        page.goto(f"{base}/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=15000)
        assert "Quorum" in page.inner_text(".swagger-ui .info .title")
        assert page.locator(".opblock").count() > 10  # the operations are listed
        page.goto(f"{base}/redoc")
        page.wait_for_selector("redoc h1, [role=main] h1, h1", timeout=15000)
        assert "Quorum" in page.inner_text("body")
        assert not outside, f"the API docs fetched from outside Quorum: {outside[:5]}"


def test_focus_ring_contrast_and_work_view_heading(ux_db: str) -> None:
    if chromium_path() is None:
        pytest.fail(MISSING)
    with serve(ux_db) as base, browser_page() as page:
        _login(page, base, "mia")
        page.goto(f"{base}/queues")
        page.click("#start")
        page.wait_for_url(f"{base}/work/*")
        assert page.locator("h1").count() == 1
        assert "Work" in page.locator("h1").inner_text()
        # keyboard focus on a label button in the work view (light background)
        page.keyboard.press("Tab")
        for _ in range(30):
            tag = page.evaluate("document.activeElement.closest('main') !== null")
            if tag:
                break
            page.keyboard.press("Tab")
        ring, back = page.evaluate("""() => {
            const el = document.activeElement, cs = getComputedStyle(el);
            let n = el.parentElement, bg = 'rgb(255, 255, 255)';
            while (n) { const c = getComputedStyle(n).backgroundColor;
              if (c && c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') { bg = c; break; }
              n = n.parentElement; }
            return [cs.outlineColor, bg]; }""")
        assert contrast(_rgb(ring), _rgb(back)) >= 3.0, (ring, back)
        # and in the dark header
        page.focus("header.top a")
        ring, back = page.evaluate("""() => [getComputedStyle(document.activeElement).outlineColor,
            getComputedStyle(document.querySelector('header.top')).backgroundColor]""")
        assert contrast(_rgb(ring), _rgb(back)) >= 3.0, (ring, back)


def test_admin_pages_fit_1024_px(ux_db: str) -> None:
    if chromium_path() is None:
        pytest.fail(MISSING)
    with serve(ux_db) as base, browser_page({"width": 1024, "height": 768}) as page:
        _login(page, base, "ana")
        wide = {}
        queue = page.evaluate("document.querySelector('table.queues td a').textContent")
        for path in ("/queues", "/reports/crowd", "/admin/rules", "/admin/thresholds",
                     "/admin/users", "/admin/audit", "/reports", "/stats", "/replay",
                     f"/queues/{queue}", "/items/1", "/my/decisions",
                     "/reports/thresholds/what-if?ok.auto=0.99",
                     "/admin/thresholds/1/apply"):
            resp = page.goto(f"{base}{path}")
            assert resp is not None and resp.status in (200, 303), (path, resp and resp.status)
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > 1024:
                wide[path] = width
        assert not wide, f"pages wider than the 1024 px window: {wide}"
