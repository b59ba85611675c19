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
