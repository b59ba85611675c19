"""Calibration blind spots: editing a threshold set (validated, audited, backing
re-checked), ``train --refit``, and pair sampling that queues what was asked or says
why not (hashing encoder)."""

import pytest
from sqlalchemy import select

from backend.calibration import service as calibration
from backend.calibration import thresholds
from backend.calibration.editing import edit_set
from backend.db import utcnow
from backend.errors import ValidationFailed
from backend.users.models import AuditEntry
from tests.backend.conftest import human_verdict, route_rows
from tests.conftest import auth, item_row


def _labelled(session, settings, policy, n):
    rows = [item_row(100 + i, title=("Cotton t-shirt size " if i % 2 else "Cannabis seeds "
                                     "strain ") + str(i)) for i in range(n)]
    ids, _ = route_rows(session, settings, policy, rows)
    for i, item_id in enumerate(ids):
        human_verdict(session, item_id, "ok" if i % 2 else "prohibited")
    return ids


def _backed_set(session, settings, policy):
    from backend.ml_adapter.service import train

    _labelled(session, settings, policy, 70)
    train(session=session)
    run = calibration.run_calibration(session=session, kind="classifier",
                                      overrides={"target_precision": 0.9})
    return thresholds.get_version(session=session, version=run.result["proposed_version"])


def test_edit_keeps_backing_only_where_the_curve_backs_the_new_value(session, settings,
                                                                      policy, ml_on):
    ts = _backed_set(session, settings, policy)
    backed = ts.bands["prohibited"]["high"]
    assert thresholds.live_map(ts, policy=policy)["prohibited"].state == "live"
    # a hair stricter: re-checked on the run's curve, still backed
    stricter = edit_set(session=session, policy=policy, version=ts.version,
                        cuts={"prohibited.high": backed + 1e-6})
    st = thresholds.live_map(stricter, policy=policy)["prohibited"]
    assert stricter.version == ts.version + 1 and stricter.state == "proposed"
    assert st.state == "live" and st.n_auto <= ts.backing["prohibited.high"]["n_auto"]
    # much stricter is not safer by itself: too few labels above it back nothing
    strictest = edit_set(session=session, policy=policy, version=ts.version,
                         cuts={"prohibited.high": 0.9999})
    st = thresholds.live_map(strictest, policy=policy)["prohibited"]
    assert st.state == "shadow" and st.n_auto < 20
    # an edit of one band leaves the others' backing as it was
    other = edit_set(session=session, policy=policy, version=ts.version,
                     auto_decide=["ML_BAD_HIGH"])
    states = thresholds.live_map(other, policy=policy)
    assert states["prohibited"].state == "live" and states["ok"].state == "off"
    assert ts.bands["prohibited"]["high"] == backed  # the source set is never changed
    # a reuse distance nobody calibrated is shadow
    reuse = edit_set(session=session, policy=policy, version=ts.version, reuse_distance=0.2)
    assert thresholds.live_map(reuse, policy=policy)["reuse_distance"].state == "shadow"


@pytest.mark.parametrize("kwargs, message", [
    ({"cuts": {"nonsense.high": 0.5}}, "not a policy label"),
    ({"cuts": {"prohibited.auto": 0.5}}, "has cut-offs"),
    ({"cuts": {"prohibited.high": 0.1}}, "middle <= high"),  # below its middle cut-off
    ({"cuts": {"ok.auto": 2.0}}, "<= 1"),
    ({"reuse_distance": 5.0}, "between 0 and 2"),
    ({"auto_decide": ["EVERYTHING"]}, "unknown bands"),
    ({}, "nothing to change"),
])
def test_edit_is_validated(session, policy, kwargs, message):
    ts = thresholds.active_threshold_set(session=session, policy=policy)
    with pytest.raises(ValidationFailed, match=message):
        edit_set(session=session, policy=policy, version=ts.version, **kwargs)


def test_edit_api_is_audited_and_refuses_bad_input(client, make_user, settings):
    from backend.db import session_scope

    _, admin = make_user("root", "admin")
    _, mod = make_user("m", "moderator", ["*"])
    client.get("/api/v1/thresholds", headers=auth(admin))
    r = client.post("/api/v1/thresholds/1/edit", json={"cuts": {"ok.auto": 0.97},
                                                       "reuse_off": True},
                    headers=auth(admin))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["version"] == 2 and body["state"] == "proposed"
    assert body["bands"]["ok"]["auto"] == 0.97 and body["reuse_distance"] is None
    states = {s["key"]: s["state"] for s in body["band_states"]}
    assert states["ok.auto"] == "shadow" and states["reuse_distance"] == "off"
    with session_scope(settings.resolved_database_url) as s:
        entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "thresholds.edit"))
        assert entry is not None and entry.details["from"] == 1
    bad = client.post("/api/v1/thresholds/1/edit", json={"cuts": {"ok.auto": 1.5}},
                      headers=auth(admin))
    assert bad.status_code in (400, 422) and "1" in bad.text
    assert client.post("/api/v1/thresholds/1/edit", json={"cuts": {"ok.auto": 0.97}},
                       headers=auth(mod)).status_code == 403
    assert client.post("/api/v1/thresholds/99/edit", json={"cuts": {"ok.auto": 0.97}},
                       headers=auth(admin)).status_code == 404


def test_train_refit_deploys_a_model_fitted_on_all_labels(session, settings, policy, ml_on):
    from backend.ml_adapter.service import train

    _labelled(session, settings, policy, 40)
    plain = train(session=session)
    refit = train(session=session, refit=True)
    assert plain.train_size == 32 and plain.metrics["held_out"] == 8
    assert refit.train_size == 40 and refit.metrics["refit_on_all"] is True
    assert refit.metrics["held_out"] == 8  # metrics measured before the refit


def test_pair_sampling_fills_a_short_side_and_says_why_it_queued_fewer(session, settings,
                                                                        policy, ml_on):
    _labelled(session, settings, policy, 60)
    sample = calibration.sample_pair_tasks(session=session, n=40)
    # one side of the reuse distance has fewer new pairs than half of n: the other side
    # fills the rest, as far as there are anchors
    assert min(sample.near, sample.far) < 20 <= sample.near + sample.far
    assert len(sample.task_ids) == 40 and sample.message is None
    big = calibration.sample_pair_tasks(session=session, n=1000)
    assert len(big.task_ids) < 1000 and big.anchors == 20  # 60 anchors, 40 already used
    assert f"queued {len(big.task_ids)} of 1000" in big.message
    assert "one pair task per item" in big.message


def test_cli_lists_band_states_and_edits_with_clear_errors(settings):
    if not settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("the CLI is exercised once; the services it calls run on both backends")
    from tests.backend.test_cli import quorum

    r = quorum(settings, "thresholds", "list")
    assert r.returncode == 0, r.stderr
    assert "ok.auto" in r.stdout and "shadow" in r.stdout and "nothing (defaults)" in r.stdout
    r = quorum(settings, "thresholds", "edit", "1", "--cut", "ok.auto=0.97",
               "--reuse-distance", "off", "--auto-decide", "auto_ok")
    assert r.returncode == 0, r.stderr
    assert "proposed threshold set v2" in r.stdout and "ok.auto" in r.stdout
    r = quorum(settings, "thresholds", "edit", "1", "--cut", "ok.auto=high")
    assert r.returncode == 2 and "not a number" in r.stderr and "Traceback" not in r.stderr
    r = quorum(settings, "thresholds", "edit", "1", "--cut", "nonsense.auto=0.5")
    assert r.returncode == 2 and "not a policy label" in r.stderr
    r = quorum(settings, "thresholds", "edit", "9", "--cut", "ok.auto=0.5")
    assert r.returncode == 3


def test_a_pair_task_needs_its_overlap_of_answers_through_the_api(client, make_user,
                                                                   settings, monkeypatch):
    """One moderator's answer used to close a pair task whose overlap is 3."""
    from backend.db import session_scope
    from backend.items.service import ingest
    from backend.policy import get_policy
    from backend.queues.models import Task

    monkeypatch.setattr(settings, "crowd_queue_kinds", [])  # every queue is the moderators'
    monkeypatch.setenv("QUORUM_CALIBRATION_PAIR_AUDIENCE", "moderators")
    from backend.calibration.settings import get_calibration_settings

    get_calibration_settings.cache_clear()
    mods = [make_user(name, "moderator", ["*"])[1] for name in ("m1", "m2", "m3", "m4")]
    with session_scope(settings.resolved_database_url) as s:
        _, ids = ingest(session=s, rows=[item_row(1), item_row(2)], policy=get_policy(),
                        now=utcnow())
        [task_id] = calibration.enqueue_pairs(session=s, pairs=[(ids[0], ids[1], 0.1)],
                                              now=utcnow(), settings=settings)

    def answer(token, label="same"):
        task = client.post("/api/v1/tasks/lease", headers=auth(token)).json()["task"]
        if task is None:
            return None
        assert task["id"] == task_id
        r = client.post(f"/api/v1/tasks/{task_id}/verdict", json={"label": label},
                        headers=auth(token))
        assert r.status_code == 200, r.text
        return r

    def state():
        with session_scope(settings.resolved_database_url) as s:
            return s.get(Task, task_id).state

    assert answer(mods[0]) is not None and state() == "pending"
    assert answer(mods[0]) is None  # the same moderator never gets it twice
    assert answer(mods[1], "different") is not None and state() == "pending"
    assert answer(mods[2]) is not None and state() == "done"  # 3 answers = the overlap
    assert answer(mods[3]) is None
    get_calibration_settings.cache_clear()
