"""Label groups in the policy: parsed and checked, calibrated as a whole, decided by routing."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from sqlalchemy import select

from backend.errors import ValidationFailed
from backend.policy import parse_policy

LABELS = [{"key": "ok", "kind": "ok"}, {"key": "offensive", "kind": "bad"},
          {"key": "hate", "kind": "bad"}, {"key": "broken", "kind": "error"}]


def policy_with(groups: object) -> dict:
    return {"name": "tweets", "version": 1, "labels": LABELS, "groups": groups}


def test_groups_parse_with_their_score() -> None:
    p = parse_policy(policy_with({"action": ["offensive", "hate"]}))
    assert p.group_members == {"action": ["offensive", "hate"]}
    assert p.groups[0].score == "one_minus_ok"  # every bad label: 1 - P(ok)
    assert p.group_of("hate") == "action" and p.group_of("ok") is None
    p = parse_policy(policy_with({"worst": {"labels": ["hate"]}}))
    assert p.groups[0].score == "sum"
    assert parse_policy({"labels": LABELS}).groups == ()


@pytest.mark.parametrize(("groups", "message"), [
    ({"action": ["offensive", "spam"]}, "unknown label 'spam'"),
    ({"action": ["ok", "hate"]}, "has kind 'ok'"),
    ({"action": ["broken"]}, "has kind 'error'"),
    ({"action": []}, "non-empty list"),
    ({"hate": ["offensive"]}, "name of a label"),
    ({"a": ["hate"], "b": ["hate"]}, "belongs to one group"),
    ({"a": {"labels": ["hate"], "score": "one_minus_ok"}}, "does not hold every bad"),
    ({"a": {"labels": ["hate"], "score": "max"}}, "score 'max'"),
    (["offensive", "hate"], "map a group name"),
])
def test_bad_groups_are_refused_with_a_sentence(groups: object, message: str) -> None:
    with pytest.raises(ValidationFailed, match=message):
        parse_policy(policy_with(groups))


@pytest.fixture
def tweet_policy(tmp_path, monkeypatch, settings):  # noqa: ANN001, ANN201
    from backend.policy import get_policy, load_policy
    from backend.settings import get_settings

    path = tmp_path / "policy.yaml"
    labels = [lab for lab in LABELS if lab["kind"] != "error"]
    path.write_text(yaml.safe_dump({"name": "tweets", "version": 1, "labels": labels,
                                    "groups": {"action": ["offensive", "hate"]}}))
    monkeypatch.setenv("QUORUM_POLICY_PATH", str(path))
    get_settings.cache_clear()
    load_policy.cache_clear()
    yield get_policy()
    get_settings.cache_clear()
    load_policy.cache_clear()


def tweets(n: int, seed: int) -> list[dict]:
    """Offensive and hate tweets share their words: the reason is unsure, the action not."""
    rng = np.random.default_rng(seed)
    ok = ["sunny", "coffee", "friends", "garden", "music", "weekend"]
    bad = ["idiot", "trash", "vermin", "loser", "parasites", "clown"]
    rows = []
    for i in range(n):
        label = rng.choice(["ok", "offensive", "hate"], p=[0.5, 0.3, 0.2])
        words = rng.choice(ok if label == "ok" else bad, 3)
        title = " ".join([*words, f"u{seed}x{i}"])  # unique: no two tweets are the same
        rows.append({"source": "tw", "external_id": f"{seed}-{i}", "title": title,
                     "label": str(label)})
    return rows


def test_group_is_calibrated_and_decides_needs_action(session, settings, ml_on,
                                                      tweet_policy):
    from backend.calibration import thresholds
    from backend.calibration.service import run_calibration
    from backend.decisions.models import ItemStatus
    from backend.imports.service import import_verdicts
    from backend.ml_adapter.service import train
    from tests.backend.conftest import route_rows

    import_verdicts(session=session, rows=tweets(600, seed=0), policy=tweet_policy)
    art = train(session=session, policy=tweet_policy)
    assert art.metrics["family_selection"]["chosen"] in ("embedding", "text_stack")
    run = run_calibration(session=session, policy=tweet_policy,
                          overrides={"target_precision": 0.97})
    group = run.result["groups"]["action"]
    assert group["members"] == ["offensive", "hate"] and group["high"]["threshold"] is not None
    assert group["high"]["precision_lower"] >= 0.97
    thresholds.apply(session=session, version=run.result["proposed_version"])
    new = [{k: v for k, v in r.items() if k != "label"} for r in tweets(200, seed=1)]
    truth = {r["external_id"]: r["label"] for r in tweets(200, seed=1)}
    ids, summary = route_rows(session, settings, tweet_policy, new)
    decided = session.execute(select(ItemStatus.item_id, ItemStatus.label).where(
        ItemStatus.item_id.in_(ids), ItemStatus.source == "classifier")).all()
    from backend.items.models import Item

    ext = dict(session.execute(select(Item.id, Item.external_id).where(Item.id.in_(ids))).all())
    removed = [(truth[ext[i]], lab) for i, lab in decided if lab != "ok"]
    assert len(removed) > 40, summary  # "needs action" decided as a whole ...
    assert all(t != "ok" for t, _ in removed)  # ... and right about it every time
