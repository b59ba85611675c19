"""The ML hooks in the routing pipeline (hashing encoder: fast, deterministic, no weights)."""

import numpy as np
import pytest
from sqlalchemy import select

from backend.decisions.models import DecisionEvent, ItemStatus
from backend.items.models import ItemEmbedding, ItemScore
from tests.backend.calibrated import calibrate_reuse
from tests.backend.conftest import human_verdict, route_rows
from tests.conftest import auth, item_row


def test_near_duplicate_reuses_a_past_verdict(session, settings, policy, ml_on):
    run = calibrate_reuse(session, settings, policy)  # the reuse distance must be backed
    version = run.result["proposed_version"]
    [a], _ = route_rows(session, settings, policy, [item_row(1, title="Vintage leather handbag "
                                                        "with gold buckle", is_new=False)])
    human_verdict(session, a, "restricted")
    [b], summary = route_rows(session, settings, policy, [item_row(2, title="Vintage leather "
                                                             "handbag with gold buckle!")])
    assert summary.decided["similarity"] == 1
    ev = session.scalar(select(DecisionEvent).where(DecisionEvent.item_id == b))
    assert (ev.source, ev.label, ev.similar_item_id) == ("similarity", "restricted", a)
    assert 0 <= ev.distance <= 0.1 and ev.threshold_set_version == version
    assert ev.details["encoder_id"].startswith("hashing:")
    # an unrelated item is not decided by similarity
    [c], summary = route_rows(session, settings, policy, [item_row(3, title="Garden hose 20 m")])
    assert summary.decided["similarity"] == 0


def test_disagreeing_neighbours_go_to_a_person(session, settings, policy, ml_on):
    calibrate_reuse(session, settings, policy)
    ids, _ = route_rows(session, settings, policy, [
        item_row(1, title="Hunting knife with wooden handle"),
        item_row(2, title="Hunting knife with wooden handle."),
    ])
    human_verdict(session, ids[0], "restricted")
    human_verdict(session, ids[1], "ok")
    [c], summary = route_rows(session, settings, policy, [
        item_row(3, title="Hunting knife with wooden handle!")])
    assert summary.decided["similarity"] == 0 and summary.queued["SIMILAR_CONFLICT"] == 1
    assert session.get(ItemStatus, c).state == "queued"


def test_corrected_verdict_is_reused_as_corrected(session, settings, policy, ml_on):
    calibrate_reuse(session, settings, policy)
    [a], _ = route_rows(session, settings, policy, [item_row(1, title="Silver ring with stone")])
    human_verdict(session, a, "ok")
    human_verdict(session, a, "fraud")  # a later human decision supersedes
    [b], _ = route_rows(session, settings, policy, [item_row(2, title="Silver ring with stone.")])
    assert session.get(ItemStatus, b).label == "fraud"


def test_classifier_scores_every_undecided_item_and_trains(session, settings, policy, ml_on):
    from backend.ml_adapter.service import train

    ids, _ = route_rows(session, settings, policy, [item_row(i, title=t) for i, t in enumerate(
        ["Cotton t-shirt blue", "Cannabis seeds pack", "Lace lingerie 18+", "Coffee mug"])])
    scores = session.scalars(select(ItemScore)).all()
    assert len(scores) == 4 and all(abs(sum(s.scores.values()) - 1) < 1e-3 for s in scores)
    assert {s.model_id for s in scores} == {"zero-shot:hashing:char2-4:256:marketplace:1"}
    # 24 human verdicts of two labels -> a trained classifier becomes active
    rows = [item_row(100 + i, title=("Cotton t-shirt size " if i % 2 else "Cannabis seeds "
                                     "strain ") + str(i)) for i in range(24)]
    new_ids, _ = route_rows(session, settings, policy, rows)
    for i, item_id in enumerate(new_ids):
        human_verdict(session, item_id, "ok" if i % 2 else "prohibited")
    art = train(session=session)
    assert art.version == 1 and art.is_active and art.train_size + art.metrics["held_out"] == 24
    assert set(art.labels) == {"ok", "prohibited"}
    from backend.calibration import thresholds
    from ml.bands import default_bands

    no_reuse = thresholds.propose(session=session, policy=policy, reuse_distance=None,
                                  bands=default_bands(thresholds.class_kinds(policy)),
                                  auto_decide=[])
    thresholds.apply(session=session, version=no_reuse.version)
    [x], _ = route_rows(session, settings, policy, [item_row(500, title="Cannabis seeds strain X")])
    s = session.scalar(select(ItemScore).where(ItemScore.item_id == x))
    assert s.model_id == "classifier-v1" and s.scores["prohibited"] > s.scores["ok"]


def test_training_refuses_with_too_few_verdicts(session, settings, policy, ml_on):
    from backend.errors import ValidationFailed
    from backend.ml_adapter.service import train

    with pytest.raises(ValidationFailed, match="at least 20"):
        train(session=session)


def test_bands_route_by_threshold_set_and_never_decide_unbacked(session, settings, policy,
                                                                 ml_on):
    from backend.calibration import thresholds

    # everything the classifier is even slightly sure of is "bad high": a set proposed by
    # hand has no calibration behind it, so its bands route (shadow) and decide nothing
    low = {k: {"high": 0.0, "middle": 0.0} if v != "ok" else {"auto": 0.0, "good": 0.0}
           for k, v in thresholds.class_kinds(policy).items()}
    new = thresholds.propose(session=session, policy=policy, bands=low, reuse_distance=None,
                             auto_decide=["ML_BAD_HIGH", "auto_ok"])
    thresholds.apply(session=session, version=new.version)
    [a], summary = route_rows(session, settings, policy, [item_row(1, title="Brass knuckles")])
    assert session.scalar(select(DecisionEvent).where(DecisionEvent.item_id == a)) is None
    assert summary.shadow_outcomes["classifier"] == 1
    assert sum(summary.queued[k] for k in ("ML_BAD_HIGH", "ML_GOOD")) == 1
    strict = {k: {"high": 1.0, "middle": 1.0} if v != "ok" else {"auto": 1.0, "good": 1.0}
              for k, v in thresholds.class_kinds(policy).items()}
    third = thresholds.propose(session=session, policy=policy, bands=strict,
                               reuse_distance=None, auto_decide=[])
    thresholds.apply(session=session, version=third.version)
    [b], summary = route_rows(session, settings, policy, [item_row(2, title="Brass knuckles",
                                                                is_new=True)])
    assert summary.decided["classifier"] == 0 and summary.queued["NEW_PRODUCTS"] == 1
    assert summary.shadow_outcomes["classifier"] == 0  # no band would decide: no shadow


def test_golden_items_are_never_decided_automatically(session, settings, policy, ml_on):
    [a], _ = route_rows(session, settings, policy, [item_row(1, title="Vintage clock")])
    human_verdict(session, a, "ok")
    [g], summary = route_rows(session, settings, policy, [
        item_row(2, title="Vintage clock", golden_label="ok")])
    assert summary.queued["GL"] == 1 and session.get(ItemStatus, g).label is None


def test_neighbours_api_and_thresholds_api(client, make_user, ml_on, settings, monkeypatch):
    monkeypatch.setattr(settings, "crowd_queue_kinds", [])  # every queue is the moderators'
    _, admin = make_user("root", "admin")
    _, mod = make_user("m", "moderator", ["*"])
    ids = client.post("/api/v1/items", json=[item_row(1, title="Red bicycle 26 inch")],
                      headers=auth(admin)).json()["item_ids"]
    task = client.post("/api/v1/tasks/lease", headers=auth(mod)).json()["task"]
    client.post(f"/api/v1/tasks/{task['id']}/verdict", json={"label": "ok"}, headers=auth(mod))
    ids2 = client.post("/api/v1/items", json=[item_row(2, title="Red bicycle 28 inch")],
                       headers=auth(admin)).json()["item_ids"]
    r = client.get(f"/api/v1/items/{ids2[0]}/neighbours", headers=auth(mod))
    assert r.status_code == 200
    assert r.json()[0]["item_id"] == ids[0] and r.json()[0]["label"] == "ok"
    assert 0 < r.json()[0]["distance"] < 1
    sets = client.get("/api/v1/thresholds", headers=auth(admin)).json()
    assert sets[0]["state"] == "active" and sets[0]["version"] == 1
    assert client.get("/api/v1/thresholds", headers=auth(mod)).status_code == 403
    assert client.post("/api/v1/thresholds/99/apply", headers=auth(admin)).status_code == 404


def test_embeddings_are_stored_once_per_encoder(session, settings, policy, ml_on):
    from backend.ml_adapter.service import ensure_embeddings, get_encoder

    ids, _ = route_rows(session, settings, policy, [item_row(1), item_row(2)])
    assert len(session.scalars(select(ItemEmbedding)).all()) == 2
    enc = get_encoder()
    rows = [{"id": i, "title": "ignored: read back", "description": "", "image": None}
            for i in ids]
    v = ensure_embeddings(session=session, rows=rows, encoder=enc)
    assert v.shape == (2, enc.dim) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert len(session.scalars(select(ItemEmbedding)).all()) == 2


def test_image_safety_score_is_a_signal_rules_see(session, settings, policy, ml_on,
                                                   monkeypatch, tmp_path):
    """With QUORUM_ML_SAFETY on, NudeNet scores the image before the rules run."""
    from PIL import Image
    from skimage import data

    from backend.items.models import Item, ItemTag
    from backend.ml_adapter.settings import get_ml_settings
    from backend.rules.schemas import RuleCreate
    from backend.rules.service import create_rule

    monkeypatch.setenv("QUORUM_ML_SAFETY", "true")
    get_ml_settings.cache_clear()
    photo = tmp_path / "coffee.jpg"
    Image.fromarray(data.coffee()).save(photo)
    create_rule(session=session, policy=policy, data=RuleCreate(
        name="safe-photo", expression="has(item.safety_score) && item.safety_score < 0.5",
        action="tag", tag="safe-photo", mode="active"), allow_live=True)
    ids, _ = route_rows(session, settings, policy, [
        item_row(1, title="Coffee cup", image=str(photo)), item_row(2, title="No photo")])
    with_photo, without = (session.get(Item, i) for i in ids)
    assert with_photo.safety_score is not None and 0 <= with_photo.safety_score < 0.5
    assert without.safety_score is None
    tags = session.scalars(select(ItemTag.item_id).where(ItemTag.tag == "safe-photo")).all()
    assert tags == [ids[0]]
