"""The threshold report page is served from a cache per calibration run (rebuilt when a run
or an apply changes the key, or on ?fresh=1), links back into the app, and its plots are
big enough to read."""

from __future__ import annotations

import base64
import io
import re

from PIL import Image

from backend.reports import plots
from tests.backend.test_calibration_service import seed_pairs
from tests.conftest import auth


def test_report_page_is_cached_until_a_new_run(client, make_user, session, settings, policy):
    seed_pairs(session, settings, policy)
    session.commit()
    _, analyst = make_user("an", "analyst")
    first = client.get("/reports/thresholds", headers=auth(analyst))
    assert first.status_code == 200 and "rebuild now" in first.text
    assert 'href="/queues"' in first.text and 'href="/reports"' in first.text
    built = first.headers["x-report-built-at"]
    again = client.get("/reports/thresholds", headers=auth(analyst))
    assert again.headers["x-report-built-at"] == built and "(from the cache)" in again.text
    # a new calibration run changes the key: the page is rebuilt at once
    r = client.post("/api/v1/calibration/runs", headers=auth(analyst),
                    json={"kind": "similarity", "reuse_target_precision": 0.9})
    assert r.status_code == 201
    after = client.get("/reports/thresholds", headers=auth(analyst))
    assert "(from the cache)" not in after.text
    assert "(from the cache)" in client.get("/reports/thresholds", headers=auth(analyst)).text
    fresh = client.get("/reports/thresholds?fresh=1", headers=auth(analyst))
    assert "(from the cache)" not in fresh.text
    assert len(list((settings.data_dir / "reports" / "cache").glob("thresholds-*.html"))) == 1


def _size(data_uri: str) -> tuple[int, int]:
    raw = base64.b64decode(re.sub(r"^data:image/png;base64,", "", data_uri))
    return Image.open(io.BytesIO(raw)).size


def test_plots_are_legible_sizes():
    import numpy as np
    import pandas as pd

    curve = pd.DataFrame({"threshold": np.linspace(0, 1, 50), "recall": np.linspace(1, 0, 50),
                          "precision": np.linspace(0.5, 1, 50)})
    w, h = _size(plots.pr_curves({"fraud": curve, "ok": curve},
                                 marks={"fraud": [("current", 0.9), ("proposed", 0.92)]}))
    assert w >= 800 and h >= 500  # was 546 × 368
    scores = pd.DataFrame({"true_label": ["ok", "fraud"] * 20,
                           "p_ok": np.linspace(0, 1, 40), "p_fraud": np.linspace(1, 0, 40)})
    w, _ = _size(plots.score_histograms(scores, ["ok", "fraud"]))
    assert w >= 900


def test_served_report_has_the_app_header_around_the_cached_body(client, make_user, session,
                                                                  settings, policy):
    from tests.web.test_web import PASSWORD, login

    seed_pairs(session, settings, policy)
    session.commit()
    make_user("ana", "analyst", password=PASSWORD)
    assert login(client, "ana").status_code == 303
    first = client.get("/reports/thresholds")
    again = client.get("/reports/thresholds")
    assert "(from the cache)" in again.text  # the body still comes from the cache
    assert again.headers["x-report-built-at"] == first.headers["x-report-built-at"]
    for page in (first.text, again.text):
        assert page.count('<header class="top">') == 1
        header = page[page.index('<header class="top">'):page.index("</header>")]
        for link in ("/queues", "/stats", "/my/decisions", "/admin/rules", "/reports",
                     "/admin/thresholds", "/replay", "/admin/audit"):
            assert f'href="{link}"' in header
        assert "ana · analyst" in header and 'action="/logout"' in header
        assert "/admin/users" not in header  # an analyst's nav, not an admin's
    # the cached file is the bare report: the header is put in per request
    cached = next((settings.data_dir / "reports" / "cache").glob("thresholds-*.html"))
    assert '<header class="top">' not in cached.read_text(encoding="utf-8")
    mix = client.get("/reports/class-mix")
    assert mix.status_code == 200 and 'href="/admin/rules"' in mix.text


def test_report_header_for_a_bearer_client_has_nav_but_no_logout_form(client, make_user,
                                                                      session, settings,
                                                                      policy):
    seed_pairs(session, settings, policy)
    session.commit()
    _, admin = make_user("ad", "admin")
    page = client.get("/reports/thresholds", headers=auth(admin)).text
    header = page[page.index('<header class="top">'):page.index("</header>")]
    assert 'href="/admin/users"' in header and 'action="/logout"' not in header
