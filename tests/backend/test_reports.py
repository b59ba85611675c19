"""Reports: the self-contained threshold report, spot-check precision, the daily class mix,
and their pages and API (analysts and admins only)."""

import re

import pytest

from backend.db import utcnow
from backend.decisions.service import NewDecision, record_decisions
from backend.items.service import ingest
from backend.queues import service as queues
from backend.reports import service as reports
from backend.reports.thresholds import write_thresholds_report
from tests.backend.test_calibration_service import _labelled, seed_pairs
from tests.conftest import auth, item_row


def _spot_checks(session, settings, policy, band, auto_label, human_labels, rate=None,
                 base=None):
    from backend.crowdwork.models import Judgment

    now = utcnow()
    base = 1000 + 100 * len(band) if base is None else base
    _, ids = ingest(session=session, rows=[item_row(base + i) for i in range(len(human_labels))],
                    policy=policy, now=now)
    payload = {"spot_check_of": 0, "band": band, "auto_label": auto_label,
               "source": "classifier"}
    if rate is not None:
        payload["sampling_probability"] = rate
    tasks = queues.enqueue(session=session, kind="SPOT_CHECK", item_ids=ids, now=now,
                           settings=settings, payloads=[payload] * len(ids))
    for task_id, item_id, label in zip(tasks, ids, human_labels, strict=True):
        session.add(Judgment(item_id=item_id, task_id=task_id, worker_kind="moderator",
                             worker_id="m", label=label, created_at=now))
        queues.complete(session=session, task=queues.get_task(session=session, task_id=task_id),
                        now=now)
    session.flush()


def test_spot_check_precision_and_its_warning(session, settings, policy):
    _spot_checks(session, settings, policy, "auto_ok", "ok", ["ok"] * 15 + ["prohibited"] * 15)
    _spot_checks(session, settings, policy, "ML_BAD_HIGH", "prohibited", ["prohibited"] * 40)
    table = reports.spot_checks(session=session).set_index("band")
    assert table.loc["auto_ok", "n"] == 30 and table.loc["auto_ok", "precision"] == 0.5
    assert table.loc["auto_ok", "precision_upper"] < 0.95
    assert table.loc["auto_ok", "below_target"]
    assert "below the target 95%" in table.loc["auto_ok", "warning"]
    assert table.loc["ML_BAD_HIGH", "precision"] == 1.0
    assert not table.loc["ML_BAD_HIGH", "below_target"]


def test_spot_check_precision_is_weighted_by_sampling_rate(session, settings, policy, tmp_path):
    """A band checked at 50 % (10 checks, all right) and, after its rate was lowered, at
    5 % (10 checks, half right): each 5 % check stands for ten times the decisions, so the
    band's precision is (10·2 + 5·20) / (10·2 + 10·20) = 54.5 %, not 15 / 20 = 75 %, on an
    effective sample size of 220² / (10·4 + 10·400) = 12.0 checks."""
    _spot_checks(session, settings, policy, "auto_ok", "ok", ["ok"] * 10, rate=0.5, base=3000)
    _spot_checks(session, settings, policy, "auto_ok", "ok", ["ok"] * 5 + ["prohibited"] * 5,
                 rate=0.05, base=3100)
    _spot_checks(session, settings, policy, "ML_BAD_HIGH", "prohibited", ["prohibited"] * 20,
                 rate=0.05, base=3200)
    table = reports.spot_checks(session=session).set_index("band")
    row = table.loc["auto_ok"]
    assert row["n"] == 20 and row["agreements"] == 15
    assert row["precision"] == pytest.approx(120 / 220)
    assert row["n_effective"] == pytest.approx(220 ** 2 / 4040)
    assert row["rates"] == "5%–50%"
    assert "effective sample size 12.0" in row["warning"]
    # pooled over both bands: 20 more checks at 5 %, all right
    pooled = table.loc[reports.ALL_BANDS]
    assert pooled["n"] == 40
    assert pooled["precision"] == pytest.approx((120 + 400) / (220 + 400))
    assert table.loc["ML_BAD_HIGH", "n_effective"] == pytest.approx(20)
    html = write_thresholds_report(session=session, out_dir=tmp_path)["html"].read_text()
    assert "effective sample size" in html and "54.5%" in html and "all bands" in html


def test_threshold_report_is_self_contained(session, settings, policy, ml_on, tmp_path):  # noqa: F811
    from backend.calibration import service as calibration
    from backend.ml_adapter.service import train

    _labelled(session, settings, policy, 40)
    train(session=session)
    calibration.run_calibration(session=session, kind="classifier")
    seed_pairs(session, settings, policy)
    calibration.run_calibration(session=session, kind="similarity")
    _spot_checks(session, settings, policy, "auto_ok", "ok", ["ok"] * 5 + ["fraud"] * 15)
    paths = write_thresholds_report(session=session, out_dir=tmp_path / "out")
    html = paths["html"].read_text()
    assert not re.search(r"https?://", html) and "<link" not in html and "<script" not in html
    assert html.count('<img alt="') == 3  # PR curves, histograms, similarity
    assert all(src.startswith("data:image/png;base64,")
               for src in re.findall(r'<img alt="[^"]*" src="([^"]*)"', html))
    # the threshold table like the seed's, with "undefined" where nothing is decided
    assert "<th>precision</th><th>recall</th><th>accuracy</th>" in html
    assert "undefined" in html and "0.55" in html
    assert "Proposed: <b>v" in html and "Warning — auto_ok" in html
    assert "labels" in html.lower() and "more labelled items" in html
    import pandas as pd

    curves = pd.read_parquet(paths["parquet"])
    assert set(curves["kind"]) == {"classifier", "similarity"}
    assert paths["csv"].exists()


def test_class_mix_percentages_add_up(session, settings, policy):
    now = utcnow()
    rows = [item_row(i, is_new=i % 2 == 0, gmv=20_000.0 if i % 5 == 0 else 10.0,
                     seller_id=f"S{i % 10}",
                     metadata={"ads_feed": i % 3 == 0, "top_search": i % 4 == 0})
            for i in range(30)]
    _, ids = ingest(session=session, rows=rows, policy=policy, now=now)
    labels = ["ok", "ok", "restricted", "adult", "prohibited", "fraud", "not_found"]
    record_decisions(session=session, now=now, decisions=[
        NewDecision(item_id=i, label=labels[k % len(labels)], source="moderator")
        for k, i in enumerate(ids)])
    report = reports.daily_report(session=session, day=queues.queue_day(now, settings))
    mix = report.class_mix.set_index("subset")
    assert mix.loc["all", "n"] == 30
    assert mix.loc["ads_feed", "n"] == 10 and mix.loc["new_items", "n"] == 15
    assert mix.loc["top_gmv", "n"] == 6 and mix.loc["top_search", "n"] == 8
    assert mix.loc["top_sellers", "n"] == 3  # 1 of 10 sellers, 3 items each
    for subset, row in mix.iterrows():
        assert sum(row[lab] for lab in report.labels) == pytest.approx(100.0), subset
    assert "not_found" in report.labels
    assert mix.loc["all", "ok"] == pytest.approx(100 * 10 / 30)
    assert report.by_source["share"].sum() == pytest.approx(100.0)
    assert report.by_source.set_index("source").loc["moderators", "decisions"] == 30


def test_report_pages_are_for_analysts(client, make_user, session, settings, policy):
    seed_pairs(session, settings, policy)
    session.commit()
    _, analyst = make_user("an", "analyst")
    _, moderator = make_user("mo", "moderator", ["MANUAL"])
    for url in ("/reports/thresholds", "/reports/class-mix"):
        r = client.get(url, headers=auth(analyst))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert client.get(url, headers=auth(moderator)).status_code == 403
        r = client.get(url, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert "Daily class mix" in client.get("/reports/class-mix", headers=auth(analyst)).text


def test_calibration_api(client, make_user, session, settings, policy):
    seed_pairs(session, settings, policy)
    session.commit()
    _, analyst = make_user("an", "analyst")
    r = client.post("/api/v1/calibration/runs", headers=auth(analyst),
                    json={"kind": "similarity", "reuse_target_precision": 0.9})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["labelled_count"] == 2 and body["proposed_version"] is None
    assert body["labels_needed"] == {"reuse_distance": 48}
    r = client.get(f"/api/v1/calibration/runs/{body['id']}", headers=auth(analyst))
    assert r.status_code == 200 and r.json()["id"] == body["id"]
    assert client.get("/api/v1/calibration/runs/999", headers=auth(analyst)).status_code == 404
    r = client.post("/api/v1/calibration/runs", headers=auth(analyst),
                    json={"kind": "similarity", "confidence": 2})
    assert r.status_code == 422
    r = client.get("/api/v1/calibration/what-if", headers=auth(analyst))
    assert r.status_code == 200 and r.json()["message"]


def test_report_links_spot_checked_items_to_their_item_pages(client, make_user, session,
                                                             settings, policy):
    from sqlalchemy import select

    from backend.queues.models import Queue, Task

    _spot_checks(session, settings, policy, "auto_ok", "ok", ["ok"] * 3 + ["fraud"] * 2)
    items = dict(session.execute(select(Task.item_id, Task.id).join(Queue).where(
        Queue.kind == "SPOT_CHECK")).tuples().all())
    session.commit()
    _, analyst = make_user("an", "analyst")
    html = client.get("/reports/thresholds", headers=auth(analyst)).text
    links = re.findall(r'<a href="/items/(\d+)">item \1</a> <small>([^<]*)</small>', html)
    assert {int(i) for i, _ in links} == set(items)  # every checked item, linked
    # the two disagreements come first and say what each side decided
    assert [why for _, why in links[:2]] == ["auto ok → people fraud"] * 2
    assert all(why == "ok, agreed" for _, why in links[2:])
