"""Bring your history: labelled items imported as human decisions (source ``import``)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from backend.decisions.models import DecisionEvent, ItemStatus
from backend.imports.service import import_verdicts
from backend.items.models import Item
from backend.queues.models import Task
from tests.backend.conftest import human_verdict
from tests.conftest import auth, item_row


def labelled(i: int, label: str, **over: object) -> dict[str, object]:
    return {**item_row(i, **over), "label": label, "decided_by": f"mod{i % 3}",
            "decided_at": "2026-03-01T10:00:00Z"}


def count(session, model) -> int:  # noqa: ANN001
    return session.scalar(select(func.count()).select_from(model))


def test_api_import_records_human_decisions_without_queues(client, make_user, session):
    _, token = make_user("ana", "analyst")
    rows = [labelled(i, "ok" if i % 2 else "prohibited") for i in range(6)]
    r = client.post("/api/v1/imports/verdicts", json=rows, headers=auth(token))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["items_created"], body["decisions"], body["unchanged"]) == (6, 6, 0)
    statuses = session.execute(select(ItemStatus.label, ItemStatus.source, ItemStatus.is_human,
                                      ItemStatus.state)).all()
    assert sorted(s.label for s in statuses) == ["ok"] * 3 + ["prohibited"] * 3
    assert {(s.source, s.is_human, s.state) for s in statuses} == {("import", True, "decided")}
    assert count(session, Task) == 0  # no queue, no task: history is not work
    event = session.scalars(select(DecisionEvent)).first()
    assert event.details == {"decided_by": "mod0", "decided_at": "2026-03-01T10:00:00+00:00",
                             "sampling_probability": 1.0}


def test_reimport_changes_nothing_and_a_corrected_file_relabels(client, make_user, session):
    _, token = make_user("ana", "analyst")
    rows = [labelled(i, "ok") for i in range(4)]
    client.post("/api/v1/imports/verdicts", json=rows, headers=auth(token))
    again = client.post("/api/v1/imports/verdicts", json={"items": rows}, headers=auth(token))
    assert again.status_code == 200
    assert (again.json()["decisions"], again.json()["unchanged"]) == (0, 4)
    assert count(session, DecisionEvent) == 4 and count(session, Item) == 4
    session.rollback()  # end the read before the app writes again (SQLite locks)
    fixed = [dict(rows[0], label="fraud")]
    res = client.post("/api/v1/imports/verdicts", json=fixed, headers=auth(token)).json()
    assert (res["decisions"], res["relabelled"]) == (1, 1)
    first = session.scalar(select(Item.id).where(Item.external_id == "X0"))
    assert session.get(ItemStatus, first).label == "fraud"


def test_import_never_overrides_a_verdict_made_in_quorum(session, settings, policy):
    import_verdicts(session=session, rows=[labelled(1, "ok")], policy=policy)
    item_id = session.scalar(select(Item.id))
    human_verdict(session, item_id, "prohibited")  # a moderator corrected it in Quorum
    res = import_verdicts(session=session, rows=[labelled(1, "ok")], policy=policy)
    assert (res.decisions, res.kept) == (0, 1)
    assert session.get(ItemStatus, item_id).label == "prohibited"


def test_bad_rows_store_nothing_and_say_which(client, make_user, session):
    _, token = make_user("ana", "analyst")
    rows = [labelled(1, "ok"), labelled(2, "spam"), {**labelled(3, "ok"), "price": -1},
            {**item_row(4)}, labelled(5, "ok", decided_at="yesterday"),
            {**labelled(6, "ok"), "sampling_probability": 0}]
    rows[4]["decided_at"] = "yesterday"
    r = client.post("/api/v1/imports/verdicts", json=rows, headers=auth(token))
    assert r.status_code == 422
    errors = {(e["row"], e["field"]) for e in r.json()["details"]["errors"]}
    assert errors == {(2, "label"), (3, "price"), (4, "label"), (5, "decided_at"),
                      (6, "sampling_probability")}
    assert count(session, Item) == 0 and count(session, DecisionEvent) == 0
    session.rollback()
    part = client.post("/api/v1/imports/verdicts?partial=true", json=rows, headers=auth(token))
    assert part.status_code == 207
    assert (part.json()["decisions"], part.json()["rejected"]) == (1, 5)
    assert count(session, Item) == 1


def test_batch_is_bounded(client, make_user, settings):
    _, token = make_user("ana", "analyst")
    rows = [labelled(i, "ok") for i in range(settings.max_ingest_batch + 1)]
    r = client.post("/api/v1/imports/verdicts", json=rows, headers=auth(token))
    assert r.status_code == 422 and "at most" in r.json()["message"]
    r = client.post("/api/v1/imports/verdicts", json={"rows": 3}, headers=auth(token))
    assert r.status_code == 422 and "JSON array" in r.json()["message"]


def test_imported_history_trains_and_fills_the_neighbour_index(session, settings, policy,
                                                               ml_on):
    from backend.ml_adapter.service import get_encoder, get_store, sync_index, train

    rng = np.random.default_rng(0)
    words = {"ok": ["lamp", "chair", "table", "mug"], "prohibited": ["pistol", "cocaine"]}
    rows = []
    for i in range(60):
        label = "ok" if i % 2 else "prohibited"
        title = " ".join(rng.choice(words[label], 2))
        rows.append(labelled(i, label, title=title, description=""))
    res = import_verdicts(session=session, rows=rows, policy=policy)
    assert res.decisions == 60
    art = train(session=session)
    assert art.train_size + art.metrics["held_out"] == 60
    encoder = get_encoder()
    store = get_store(encoder=encoder, session=session)
    assert sync_index(session=session, encoder=encoder, store=store) == 60
    assert len(store) == 60


@pytest.fixture
def sqlite_only(db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("the CLI is exercised once; the service it calls runs on both backends")


def quorum(settings, *args):  # noqa: ANN001, ANN201
    env = {"QUORUM_DATABASE_URL": settings.resolved_database_url,
           "QUORUM_DATA_DIR": str(settings.data_dir), "PATH": "/usr/bin:/bin",
           "HF_HUB_OFFLINE": "1", "QUORUM_ML_ENABLED": "false"}
    return subprocess.run([sys.executable, "-m", "backend.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_cli_imports_csv_jsonl_parquet_idempotently(settings, tmp_path, sqlite_only, session):
    csv = tmp_path / "history.csv"
    pd.DataFrame([labelled(i, "ok") for i in range(3)]).to_csv(csv, index=False)
    r = quorum(settings, "import", "verdicts", str(csv))
    assert r.returncode == 0, r.stderr
    assert "3 verdict(s) imported" in r.stdout
    r = quorum(settings, "import", "verdicts", str(csv))
    assert r.returncode == 0 and "0 verdict(s) imported" in r.stdout and "3 unchanged" in r.stdout
    jl = tmp_path / "history.jsonl"
    jl.write_text("\n".join(json.dumps(labelled(i, "fraud")) for i in range(3, 5)))
    assert "2 verdict(s) imported" in quorum(settings, "import", "verdicts", str(jl)).stdout
    pq = tmp_path / "history.parquet"
    pd.DataFrame([labelled(i, "adult") for i in range(5, 7)]).to_parquet(pq)
    assert "2 verdict(s) imported" in quorum(settings, "import", "verdicts", str(pq)).stdout
    assert count(session, DecisionEvent) == 7


def test_cli_bad_file_exit_2_one_sentence(settings, tmp_path, sqlite_only, session):
    csv = tmp_path / "history.csv"
    pd.DataFrame([labelled(1, "ok"), labelled(2, "spam")]).to_csv(csv, index=False)
    r = quorum(settings, "import", "verdicts", str(csv))
    assert r.returncode == 2
    assert "row 2: label: unknown label 'spam'" in r.stderr and "Traceback" not in r.stderr
    assert count(session, Item) == 0
    session.rollback()
    r = quorum(settings, "import", "verdicts", str(tmp_path / "missing.csv"))
    assert r.returncode == 2 and "does not exist" in r.stderr
