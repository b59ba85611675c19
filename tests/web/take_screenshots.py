"""Take the screenshots in ``docs/screenshots/`` from a demo database (not a test).

    QUORUM_DATA_DIR=/tmp/webdemo .venv/bin/quorum demo --items 600 --moderated 40
    QUORUM_DATA_DIR=/tmp/webdemo .venv/bin/python -m tests.web.take_screenshots
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from tests.web.browser import browser_page, serve

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _save(page, name: str) -> None:  # noqa: ANN001
    from PIL import Image

    png = page.screenshot()
    img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128)
    img.save(OUT / f"{name}.png", optimize=True)
    print("saved", OUT / f"{name}.png")


def _login(page, base: str, name: str) -> None:  # noqa: ANN001
    page.goto(f"{base}/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", f"{name}-demo-pass")
    page.press("input[name=password]", "Enter")
    page.wait_for_url(f"{base}/queues")


def main() -> int:
    from backend.settings import get_settings

    OUT.mkdir(parents=True, exist_ok=True)
    url = get_settings().resolved_database_url
    with serve(url) as base, browser_page({"width": 1280, "height": 760}) as page:
        page.goto(f"{base}/login")
        _save(page, "login")
        _login(page, base, "alice")
        _save(page, "queues")
        page.keyboard.press("Enter")
        page.wait_for_url(f"{base}/work/*")
        for _ in range(12):  # find an item with a photo and some context
            if page.locator(".imgbox img").count() and page.locator(".hits li.none").count() == 0:
                break
            old = page.locator("#work").get_attribute("data-task-id")
            page.keyboard.press("s")
            page.wait_for_function(
                "o => document.getElementById('work').dataset.taskId !== o", arg=old)
        page.wait_for_timeout(300)
        _save(page, "work")
        queue = page.locator("#work .item-card").get_attribute("data-queue")
        page.goto(f"{base}/queues/MANUAL_" + queue.split("_")[-1])
        _save(page, "cluster-review")
        page.goto(f"{base}/stats")
        _save(page, "stats")
        page.context.clear_cookies()
        _login(page, base, "carol")
        page.goto(f"{base}/admin/rules")
        _save(page, "forbidden")
        page.context.clear_cookies()
        _login(page, base, "analyst")
        page.goto(f"{base}/admin/rules")
        _save(page, "rules-list")
        page.locator("table.rules a").first.click()
        page.locator("form[action$='/dry-run'] button").click()
        page.wait_for_selector(".backtest")
        _save(page, "rules")
        page.context.clear_cookies()
        _login(page, base, "admin")
        page.goto(f"{base}/admin/users")
        _save(page, "users")
        page.goto(f"{base}/admin/audit")
        _save(page, "audit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
