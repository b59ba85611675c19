"""Safe by default: a cut-off or reuse distance that calibration has not backed never
decides; it runs in shadow (what it would have decided is recorded, the item goes to
people) until a calibration run backs it and the set is applied. Threshold sets are bound
to the model they were calibrated for (hashing encoder: fast, no weights)."""

import pytest
from sqlalchemy import select

from backend.calibration import service as calibration
from backend.calibration import thresholds
from backend.decisions.models import DecisionEvent, ItemStatus
from backend.items.models import ItemScore
from backend.routing.models import ShadowOutcome
from tests.backend.calibrated import calibrate_reuse
from tests.backend.conftest import human_verdict, route_rows
from tests.conftest import item_row


def _labelled(session, settings, policy, n):
    """``n`` items with moderator verdicts: t-shirts are ok, cannabis seeds prohibited."""
    rows = [item_row(100 + i, title=("Cotton t-shirt size " if i % 2 else "Cannabis seeds "
                                     "strain ") + str(i)) for i in range(n)]
    ids, _ = route_rows(session, settings, policy, rows)
    for i, item_id in enumerate(ids):
        human_verdict(session, item_id, "ok" if i % 2 else "prohibited")
    return ids


def _events(session, item_id):
    return session.scalars(select(DecisionEvent).where(DecisionEvent.item_id == item_id)).all()


def test_fresh_install_decides_nothing_but_by_rules(session, settings, policy, ml_on):
    from backend.rules.schemas import RuleCreate
    from backend.rules.service import create_rule

    create_rule(session=session, policy=policy, data=RuleCreate(
        name="weapons", expression='item.title.contains("knuckles")', action="decide",
        label="prohibited", mode="active"), allow_live=True)
    [a], _ = route_rows(session, settings, policy, [item_row(1, title="Vintage leather handbag "
                                                        "with gold buckle")])
    human_verdict(session, a, "restricted")
    ids, summary = route_rows(session, settings, policy, [
        item_row(2, title="Vintage leather handbag with gold buckle!"),  # near-duplicate
        item_row(3, title="Brass knuckles"),  # the rule
        item_row(4, title="Cotton t-shirt blue")])
    assert dict(summary.decided) == {"rule": 1}
    assert {e.source for i in ids for e in _events(session, i)} == {"rule"}
    assert session.get(ItemStatus, ids[0]).state == "queued"
    # the default reuse distance ran in shadow: what it would have reused is recorded
    shadow = session.scalar(select(ShadowOutcome).where(ShadowOutcome.item_id == ids[0],
                                                        ShadowOutcome.source == "similarity"))
    assert shadow is not None and (shadow.label, shadow.similar_item_id) == ("restricted", a)
    assert "backed" in shadow.reason and shadow.routed_to is not None
    states = {s.key: s.state for s in thresholds.band_states(
        thresholds.active_threshold_set(session=session, policy=policy), policy=policy)}
    assert set(states.values()) == {"shadow"} and "reuse_distance" in states


def test_unbacked_band_records_a_shadow_outcome_and_routes(session, settings, policy, ml_on):
    from backend.ml_adapter.service import train

    _labelled(session, settings, policy, 24)
    train(session=session)
    # every band decides at p >= 0: but nothing backs these values
    low = {k: {"high": 0.0, "middle": 0.0} if v != "ok" else {"auto": 0.0, "good": 0.0}
           for k, v in thresholds.class_kinds(policy).items()}
    ts = thresholds.propose(session=session, policy=policy, bands=low, reuse_distance=None,
                            auto_decide=["auto_ok", "ML_BAD_HIGH"])
    thresholds.apply(session=session, version=ts.version)
    [x, y], summary = route_rows(session, settings, policy, [
        item_row(500, title="Cannabis seeds strain X"), item_row(501, title="Cotton t-shirt M")])
    assert summary.decided["classifier"] == 0 and summary.shadow_outcomes["classifier"] == 2
    assert _events(session, x) == [] and session.get(ItemStatus, x).state == "queued"
    sx, sy = (session.scalar(select(ShadowOutcome).where(ShadowOutcome.item_id == i))
              for i in (x, y))
    assert (sx.label, sx.band, sx.routed_to) == ("prohibited", "ML_BAD_HIGH", "ML_BAD_HIGH")
    assert (sy.label, sy.band, sy.routed_to) == ("ok", "auto_ok", "ML_GOOD")
    assert sx.model_id == "classifier-v1" and sx.threshold_set_version == ts.version


def test_backing_calibration_run_then_apply_decides(session, settings, policy, ml_on):
    from backend.ml_adapter.service import train

    _labelled(session, settings, policy, 70)
    train(session=session)
    title = "Cannabis seeds strain 10"

    def row(i):  # priced like the labelled items (price is a signal of the classifier)
        return item_row(i, title=title, price=120.0)
    [before], summary = route_rows(session, settings, policy, [row(900)])
    assert summary.decided["classifier"] == 0 and _events(session, before) == []
    run = calibration.run_calibration(session=session, kind="classifier",
                                      overrides={"target_precision": 0.9})
    backing = run.result["labels"]["prohibited"]["backing"]
    assert backing["backed"] and backing["lower"] >= 0.9 and backing["n_auto"] > 0
    ts = thresholds.get_version(session=session, version=run.result["proposed_version"])
    assert (ts.model_id, ts.encoder_id) == ("classifier-v1", "hashing:char2-4:256")
    live = thresholds.live_map(ts, policy=policy, model_id="classifier-v1")
    assert live["prohibited"].state == "live" and live["prohibited"].n_labelled == 70
    # proposed is not applied: still shadow
    [mid], summary = route_rows(session, settings, policy, [row(901)])
    assert summary.decided["classifier"] == 0
    thresholds.apply(session=session, version=ts.version)
    [after], summary = route_rows(session, settings, policy, [row(902)])
    assert summary.decided["classifier"] == 1
    [ev] = _events(session, after)
    assert (ev.source, ev.label, ev.model_id) == ("classifier", "prohibited", "classifier-v1")
    assert ev.threshold_set_version == ts.version


def test_reuse_distance_goes_live_after_a_backing_similarity_run(session, settings, policy,
                                                                 ml_on):
    [a], _ = route_rows(session, settings, policy, [item_row(1, title="Silver ring with stone")])
    human_verdict(session, a, "ok")
    # five answered pairs cannot back a reuse distance at 95%
    run = calibrate_reuse(session, settings, policy, n=5)
    assert run.result["proposed_version"] is None and run.result["labels_needed"][
        "reuse_distance"] > 0
    [b], summary = route_rows(session, settings, policy, [item_row(2, title="Silver ring with "
                                                                 "stone.")])
    assert summary.decided["similarity"] == 0 and summary.shadow_outcomes["similarity"] == 1
    run = calibrate_reuse(session, settings, policy, n=80)
    ts = thresholds.active_threshold_set(session=session, policy=policy)
    assert ts.version == run.result["proposed_version"]
    assert thresholds.live_map(ts, policy=policy, encoder_id="hashing:char2-4:256")[
        "reuse_distance"].state == "live"
    [c], summary = route_rows(session, settings, policy, [item_row(3, title="Silver ring with "
                                                                 "stone!")])
    assert summary.decided["similarity"] == 1
    [ev] = _events(session, c)
    assert ev.similar_item_id == a and ev.inputs["neighbours"][0]["id"] == a
    assert ev.content_hash and ev.policy_version == f"{policy.name}:{policy.version}"
    # a set backed for another encoder does not reuse here
    assert thresholds.live_map(ts, policy=policy, encoder_id="minilm")[
        "reuse_distance"].state == "shadow"


def test_set_calibrated_for_model_a_does_not_decide_for_model_b(session, settings, policy,
                                                                  ml_on):
    from pathlib import Path

    from backend.ml_adapter import service
    from backend.ml_adapter.service import train

    _labelled(session, settings, policy, 70)
    a = train(session=session)
    run = calibration.run_calibration(session=session, kind="classifier",
                                      overrides={"target_precision": 0.9})
    thresholds.apply(session=session, version=run.result["proposed_version"])
    b = train(session=session, seed=1)  # the challenger
    assert (a.version, b.version) == (1, 2) and b.is_active
    title = "Cannabis seeds strain 10"

    def row(i):  # priced like the labelled items (price is a signal of the classifier)
        return item_row(i, title=title, price=120.0)
    # champion/challenger: model A still decides with its set, B scores in shadow
    [x], summary = route_rows(session, settings, policy, [row(950)])
    assert summary.decided["classifier"] == 1 and _events(session, x)[0].model_id == \
        "classifier-v1"
    assert {s.model_id for s in session.scalars(select(ItemScore).where(
        ItemScore.item_id == x))} == {"classifier-v1", "classifier-v2"}
    # without model A (its file gone), B scores alone: A's set does not decide for it
    import shutil

    shutil.rmtree(Path(a.path))
    service._classifiers.clear()
    [y], summary = route_rows(session, settings, policy, [row(951)])
    assert summary.decided["classifier"] == 0 and _events(session, y) == []
    sh = session.scalar(select(ShadowOutcome).where(ShadowOutcome.item_id == y,
                                                    ShadowOutcome.source == "classifier"))
    assert sh.model_id == "classifier-v2" and "classifier-v1" in sh.reason
    # a calibration run for B backs a set for B; applied, B decides
    run = calibration.run_calibration(session=session, kind="classifier",
                                      overrides={"target_precision": 0.9})
    assert run.result["model_id"] == "classifier-v2"
    thresholds.apply(session=session, version=run.result["proposed_version"])
    [z], summary = route_rows(session, settings, policy, [row(952)])
    assert summary.decided["classifier"] == 1 and _events(session, z)[0].model_id == \
        "classifier-v2"


@pytest.mark.parametrize("cut", [0.0])
def test_thresholds_api_says_live_shadow_off(client, make_user, ml_on, cut):
    from tests.conftest import auth

    _, admin = make_user("root", "admin")
    sets = client.get("/api/v1/thresholds", headers=auth(admin)).json()
    [default] = sets
    bands = {b["key"]: b for b in default["band_states"]}
    assert bands["ok.auto"]["state"] == "shadow" and bands["reuse_distance"]["state"] == "shadow"
    assert bands["ok.auto"]["band"] == "auto_ok" and "backed" in bands["ok.auto"]["reason"]


def test_shadow_agreement_compares_shadow_outcomes_with_later_verdicts(session, settings,
                                                                       policy, ml_on):
    from backend.reports.thresholds import build_thresholds_report
    from backend.routing.shadow import shadow_agreement

    [a], _ = route_rows(session, settings, policy, [item_row(1, title="Silver ring with stone")])
    human_verdict(session, a, "ok")
    ids, summary = route_rows(session, settings, policy, [
        item_row(2, title="Silver ring with stone."), item_row(3, title="Silver ring with "
                                                               "stone!")])
    assert summary.shadow_outcomes["similarity"] == 2
    human_verdict(session, ids[0], "ok")  # agrees with the shadow
    human_verdict(session, ids[1], "fraud")  # does not
    table = shadow_agreement(session=session)
    row = table[table["source"] == "similarity"].iloc[0]
    assert (row["n"], row["judged"], row["agreed"], row["agreement"]) == (2, 2, 1, 0.5)
    html = build_thresholds_report(session=session, settings=settings).html
    assert "Shadow outcomes against the people" in html and "in shadow" in html
    # the item people decided otherwise is named and linked to its item page
    assert row["disagreed_items"] == [ids[1]]
    assert f'<a href="/items/{ids[1]}">item {ids[1]}</a>' in html
    assert f'href="/items/{ids[0]}"' not in html


def test_a_fine_tuned_minilm_is_trained_calibrated_and_decides(session, settings, policy,
                                                                ml_on, monkeypatch, db_url):
    """The ``minilm_finetune`` family through the product path: ``train`` fine-tunes it,
    calibration refits it out of fold, and once its set is applied it decides."""
    if not db_url.startswith("sqlite"):
        pytest.skip("seven fine-tunes (~30 s); the family touches no SQL, so one backend")
    from backend.ml_adapter.service import active_classifier, get_encoder, train
    from backend.ml_adapter.settings import get_ml_settings
    from ml.finetune import MiniLMFineTuned

    monkeypatch.setenv("QUORUM_ML_FINETUNE_MIN_LABELS", "20")
    monkeypatch.setenv("QUORUM_ML_FINETUNE_LAYERS", "1")
    monkeypatch.setenv("QUORUM_ML_FINETUNE_EPOCHS", "8")  # 48 labels: 2 steps an epoch
    get_ml_settings.cache_clear()
    _labelled(session, settings, policy, 60)
    art = train(session=session, families=["minilm_finetune"])
    assert art.kind == "minilm_finetune"
    assert "auto_share" in art.metrics["family_selection"]["families"]["minilm_finetune"]
    assert art.metrics["accuracy"] >= 0.9  # on the held-out share
    model, model_id = active_classifier(session=session, encoder=get_encoder(),
                                        policy=policy)
    assert isinstance(model, MiniLMFineTuned) and model_id == "classifier-v1"
    run = calibration.run_calibration(session=session, kind="classifier",
                                      overrides={"target_precision": 0.9})
    assert run.result["out_of_fold"] is True
    assert run.result["labels"]["prohibited"]["backing"]["backed"]
    thresholds.apply(session=session, version=run.result["proposed_version"])
    [x], summary = route_rows(session, settings, policy,
                              [item_row(950, title="Cannabis seeds strain 77", price=120.0)])
    assert summary.decided["classifier"] == 1
    [ev] = _events(session, x)
    assert (ev.source, ev.label, ev.model_id) == ("classifier", "prohibited", "classifier-v1")


def test_an_unknown_family_is_refused_with_a_sentence(session, settings, policy, ml_on):
    from backend.errors import ValidationFailed
    from backend.ml_adapter.service import train

    _labelled(session, settings, policy, 24)
    with pytest.raises(ValidationFailed, match="unknown classifier family bert; use embedding"):
        train(session=session, families="text_stack,bert")
