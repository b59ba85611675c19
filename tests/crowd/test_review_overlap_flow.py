"""Quality rules, dynamic overlap and the whole push → work → pull → aggregate path."""

from __future__ import annotations

import dataclasses

import pandas as pd

from crowd.config import CrowdConfig
from crowd.emulator import SimWorker
from crowd.flow import run_flow
from crowd.overlap import next_round
from crowd.pull import pull
from crowd.push import PushPlan, push
from crowd.quality import crowd_metrics, worker_metrics
from crowd.review import review
from crowd.store import MemoryStore

HONEST = [SimWorker(f"h{i}", accuracy=0.9, seconds_per_task=10) for i in range(6)]


def test_golden_rule_bans_a_spammer(emulator_factory, client_for, plan):
    # The spammer is slow enough to pass the fast-answer rule: only gold can catch it.
    spammer = SimWorker("spam", seconds_per_task=5, kind="constant")
    emu = emulator_factory(seed=4, workers=[spammer, *HONEST])
    client = client_for(emu)
    pushed = push(client, plan=plan, store=MemoryStore())
    emu.work(pushed.pool_id)
    answers = pull(client, pool_id=pushed.pool_id).answers
    result = review(client, answers=answers, project_id=pushed.project_id, config=plan.config)
    assert result.banned == ["spam"]
    rejected = result.decisions[result.decisions["verdict"] == "REJECTED"]
    assert set(rejected["worker"]) == {"spam"}
    assert {emu.state.assignments[a]["status"] for a in rejected["assignment_id"]} == {"REJECTED"}
    assert {r["user_id"] for r in emu.state.restrictions.values()} == {"spam"}
    # Rejected tasks are re-issued, and never to the banned worker.
    client.open_pool(pushed.pool_id)
    assert emu.work(pushed.pool_id) > 0
    later = pull(client, pool_id=pushed.pool_id, cursor=answers["assignment_id"].max()).answers
    assert len(later) and "spam" not in set(later["worker"])


def test_fast_answers_are_rejected(emulator_factory, client_for, plan):
    speedy = SimWorker("speedy", accuracy=0.9, seconds_per_task=0.5)
    emu = emulator_factory(seed=4, workers=[speedy, *HONEST])
    client = client_for(emu)
    pushed = push(client, plan=plan, store=MemoryStore())
    emu.work(pushed.pool_id)
    answers = pull(client, pool_id=pushed.pool_id).answers
    result = review(client, answers=answers, project_id=pushed.project_id, config=plan.config)
    assert "speedy" in result.banned
    reasons = result.workers.set_index("worker")["reason"]
    assert reasons["speedy"] == "fast answers"


def test_next_round_asks_only_where_unsure():
    config = CrowdConfig(
        overlap=1, min_answers=2, max_overlap=4, target_confidence=0.7, aggregation="mv"
    )
    answers = pd.DataFrame(
        [
            ("agree", "a", "ok"),
            ("agree", "b", "ok"),  # decided
            ("single", "a", "ok"),  # too few answers
            ("tie", "a", "ok"),
            ("tie", "b", "adult"),  # tie
            ("capped", "a", "ok"),
            ("capped", "b", "adult"),
            ("capped", "c", "ok"),
            ("capped", "d", "adult"),
        ],
        columns=["task", "worker", "label"],
    )
    more = next_round(answers, config=config).set_index("task")
    assert set(more.index) == {"single", "tie"}
    assert more.loc["single", "need"] == 1 and more.loc["single", "overlap"] == 2
    assert more.loc["tie", "overlap"] == 3


def test_dynamic_overlap_stops_early_on_agreement(emulator_factory, client_for, plan, truth):
    perfect = [SimWorker(f"p{i}", accuracy=1.0, seconds_per_task=10) for i in range(5)]
    emu = emulator_factory(seed=1, workers=perfect, truth=truth)
    # two agreeing answers of four labels: mv states (2 + 1/4) / (2 + 1) = 0.75, not 1.0
    plan = dataclasses.replace(plan, config=dataclasses.replace(plan.config,
                                                                target_confidence=0.7))
    result = run_flow(client_for(emu), plan=plan, store=MemoryStore(), wait=emu.work, method="mv")
    assert len(result.rounds) == 1  # everybody agreed on the first two answers
    real = result.valid[~result.valid["is_golden"]]
    assert (real.groupby("task").size() == plan.config.min_answers).all()
    assert (result.verdicts["status"] == "decided").all()


def test_full_flow_reaches_verdicts(emulator_factory, client_for, plan, truth):
    emu = emulator_factory(seed=11, workers=20, truth=truth)
    client = client_for(emu)
    # mv's smoothed share: 2 of 3 and 3 of 5 state ~0.55 (raw shares 0.67 / 0.6)
    plan = dataclasses.replace(plan, config=CrowdConfig(tasks_per_suite=5, target_confidence=0.5))
    result = run_flow(client, plan=plan, store=MemoryStore(), wait=emu.work, method="mv")
    verdicts = result.verdicts
    assert list(verdicts.columns) == [
        "task",
        "label",
        "confidence",
        "n_answers",
        "method",
        "status",
        "reason",
    ]
    assert set(verdicts["task"]) == set(truth)
    decided = verdicts[verdicts["status"] == "decided"]
    accuracy = (decided["label"] == decided["task"].map(truth)).mean()
    mean_worker = sum(w.accuracy for w in emu.workers if w.kind == "honest") / 18
    assert len(decided) >= 0.8 * len(truth) and accuracy >= mean_worker + 0.05
    per_item = result.valid[~result.valid["is_golden"]].groupby("task").size()
    assert per_item.max() <= plan.config.max_overlap
    # decided on at least min_answers (a worker banned later may take one of them away)
    assert (decided["n_answers"] >= plan.config.min_answers).all()
    assert len(result.rounds) > 1  # some items needed more answers
    assert result.banned  # make_workers' spammers got caught
    metrics = crowd_metrics(result.valid)
    assert metrics.loc[result.push.pool_id, "items"] == len(truth)
    assert 0 < metrics.loc[result.push.pool_id, "cost_per_item"] < 0.1
    assert set(worker_metrics(result.valid)["worker"]) == set(result.valid["worker"])


def test_pair_tasks_use_the_same_machinery(emulator_factory, client_for):
    pairs = pd.DataFrame(
        {
            "item_id": [f"a{i}|b{i}" for i in range(10)],
            "item_a": [{"title": f"a{i}"} for i in range(10)],
            "item_b": [{"title": f"b{i}"} for i in range(10)],
        }
    )
    truth = {k: ("yes" if i % 3 else "no") for i, k in enumerate(pairs["item_id"])}
    emu = emulator_factory(
        seed=2, workers=[SimWorker(f"h{i}", accuracy=0.95) for i in range(5)], truth=truth
    )
    plan = PushPlan(
        key="PAIRS_2024-01-01",
        policy=[],
        items=pairs,
        kind="pair",
        config=CrowdConfig(golden_per_suite=0, tasks_per_suite=5),
    )
    result = run_flow(client_for(emu), plan=plan, store=MemoryStore(), wait=emu.work, method="mv")
    decided = result.verdicts[result.verdicts["status"] == "decided"]
    assert set(result.valid["label"]) <= {"yes", "no"}
    assert (decided["label"] == decided["task"].map(truth)).mean() >= 0.9


def test_training_pass_mark_keeps_bad_workers_out(emulator_factory, client_for, plan, golden):
    workers = [SimWorker("good", accuracy=1.0), SimWorker("bad", accuracy=0.0, seconds_per_task=10)]
    emu = emulator_factory(seed=0, workers=workers)
    training = golden.assign(item_id=lambda d: "train-" + d["item_id"])
    trained = PushPlan(
        key=plan.key,
        policy=plan.policy,
        items=plan.items,
        golden=plan.golden,
        training=training,
        config=CrowdConfig(training=True, training_pass_mark=80),
    )
    client = client_for(emu)
    pushed = push(client, plan=trained, store=MemoryStore())
    assert pushed.training_id is not None
    emu.work(pushed.pool_id)
    assert set(pull(client, pool_id=pushed.pool_id).answers["worker"]) == {"good"}


def test_pair_truth_follows_the_items_truth(emulator_factory, client_for):
    """Given item labels only, the emulator's truth for a pair ``"<a>|<b>"`` is yes iff
    the two labels agree (what a perfect worker then answers)."""
    from crowd.pairs import pair_key, split_pair_key

    labels = {str(i): ["ok", "adult", "fraud"][i % 3] for i in range(12)}
    keys = [pair_key(i, j) for i in range(6) for j in (i + 1, i + 3)]
    pairs = pd.DataFrame(
        {
            "item_id": keys,
            "item_a": [{"title": k} for k in keys],
            "item_b": [{"title": k} for k in keys],
        }
    )
    emu = emulator_factory(seed=1, workers=[SimWorker("exact", accuracy=1.0)], truth=labels)
    client = client_for(emu)
    plan = PushPlan(
        key="PAIRS_2024-01-02",
        policy=[],
        items=pairs,
        kind="pair",
        config=CrowdConfig(overlap=1, min_answers=1, golden_per_suite=0),
    )
    pushed = push(client, plan=plan, store=MemoryStore())
    emu.work(pushed.pool_id)
    got = pull(client, pool_id=pushed.pool_id, field="same_decision").answers
    expected = {
        k: "yes" if labels[a] == labels[b] else "no" for k in keys for a, b in [split_pair_key(k)]
    }
    assert dict(zip(got["task"], got["label"], strict=True)) == expected
    assert set(expected.values()) == {"yes", "no"}
    assert split_pair_key("12") is None and split_pair_key("1|2|3") is None


def test_a_ban_needs_evidence_when_asked_for_a_confidence_bound():
    """1 right of 3 golden answers bans under the point-estimate rule; with
    ``golden_ban_confidence`` it takes evidence (0 of 5, 2 of 12) to ban."""
    from crowd.review import worker_quality

    rows = []
    for worker, right, seen in [("thin", 1, 3), ("none-right", 0, 5), ("many", 2, 12),
                                ("good", 9, 10)]:
        for i in range(seen):
            rows.append({"task": f"g{i}", "worker": worker, "is_golden": True,
                         "golden_label": "ok", "label": "ok" if i < right else "adult",
                         "assignment_id": f"{worker}-{i}", "time_spent_s": 10.0})
    answers = pd.DataFrame(rows)
    old = worker_quality(answers, config=CrowdConfig()).set_index("worker")["banned"]
    assert old.to_dict() == {"good": False, "many": True, "none-right": True, "thin": True}
    bound = CrowdConfig(golden_ban_confidence=0.9)
    new = worker_quality(answers, config=bound).set_index("worker")
    assert new["banned"].to_dict() == {"good": False, "many": True, "none-right": True,
                                       "thin": False}
    assert 0.6 < new.loc["thin", "golden_accuracy_upper"] < 0.8
