"""Replay: re-run the pipeline on stored items with another threshold set; nothing is
written, what would change is reported and scored against human verdicts."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from backend.calibration import service as calibration
from backend.calibration import thresholds
from backend.db import utcnow
from backend.decisions.models import DecisionEvent
from backend.items.models import ItemScore
from backend.queues.models import Task
from backend.routing.models import ShadowOutcome
from backend.routing.replay import replay
from tests.backend.conftest import human_verdict, route_rows
from tests.conftest import item_row


def _count(session, model):
    return session.scalar(select(func.count()).select_from(model))


def test_replay_with_a_backed_set_shows_the_flips_and_writes_nothing(session, settings,
                                                                     policy, ml_on):
    from backend.ml_adapter.service import train

    start = utcnow() - timedelta(minutes=1)
    rows = [item_row(100 + i, title=("Cotton t-shirt size " if i % 2 else "Cannabis seeds "
                                     "strain ") + str(i)) for i in range(70)]
    ids, _ = route_rows(session, settings, policy, rows)
    for i, item_id in enumerate(ids[:60]):  # the last 10 stay with people
        human_verdict(session, item_id, "ok" if i % 2 else "prohibited")
    train(session=session)
    run = calibration.run_calibration(session=session, kind="classifier",
                                      overrides={"target_precision": 0.9})
    version = run.result["proposed_version"]
    before = {m: _count(session, m) for m in (DecisionEvent, Task, ItemScore, ShadowOutcome)}
    result = replay(session=session, since=start, settings=settings, now=utcnow(),
                    thresholds_version=version)
    assert {m: _count(session, m) for m in before} == before  # nothing was written
    assert thresholds.active_threshold_set(session=session, policy=policy).version != version
    rows = result.rows.set_index("item_id")
    assert len(rows) == 70 and result.thresholds_version == version
    # stored: everything went to people (fresh install); replayed: the backed bands decide
    assert rows["before"].str.startswith("queue:").all()
    flipped = rows[rows["changed"]]
    assert len(flipped) > 0 and flipped["after"].str.startswith("classifier:").all()
    right, judged = result.precision("after")
    assert judged > 0 and right / judged >= 0.9
    # an item is never offered its own verdict by the neighbour index
    assert not rows["after"].str.startswith("similarity:").any()
    # with the active set (defaults, nothing backed) replay decides nothing either
    same = replay(session=session, since=start, settings=settings, now=utcnow())
    assert same.rows["after"].str.startswith("queue:").all()
    assert same.precision("after") == (0, 0)


def test_replay_cli_prints_and_writes_csv(settings, tmp_path):
    if not settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("the CLI is exercised once; the services it calls run on both backends")
    import json

    import pandas as pd

    from tests.backend.test_cli import quorum

    jl = tmp_path / "items.jsonl"
    jl.write_text("\n".join(json.dumps(item_row(i)) for i in range(3)))
    assert quorum(settings, "ingest", str(jl)).returncode == 0
    out = tmp_path / "replay.csv"
    r = quorum(settings, "replay", "--since", "2000-01-01", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "replayed 3 item(s)" in r.stdout and "would change" in r.stdout
    assert len(pd.read_csv(out)) == 3
    r = quorum(settings, "replay", "--since", "yesterday")
    assert r.returncode == 2 and "--since" in r.stderr and "Traceback" not in r.stderr
    r = quorum(settings, "replay", "--since", "2000-01-01", "--thresholds", "42")
    assert r.returncode == 3
