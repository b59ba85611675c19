"""The states real Toloka pools produce (ACTIVE, SKIPPED, EXPIRED suites, PENDING
operations, 429s, the pool's own quality control) and Quorum's pull path against them."""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter

import httpx
import pandas as pd
import pytest
import toloka.client as tc
from toloka.client.exceptions import TooManyRequestsApiError

from crowd.config import CrowdConfig
from crowd.emulator import Fault, Realism, SimWorker
from crowd.flow import run_flow
from crowd.pull import pull
from crowd.push import push
from crowd.review import review
from crowd.store import MemoryStore

FATES = Realism(active=0.2, expired=0.15, skipped=0.15)
HONEST = [SimWorker(f"h{i}", accuracy=0.9, seconds_per_task=10) for i in range(8)]


def statuses(emu, pool_id: str) -> Counter:
    return Counter(a["status"] for a in emu.state.assignments.values() if a["pool_id"] == pool_id)


def test_suites_go_active_skipped_expired_and_their_tasks_come_back(
    emulator_factory, client_for, plan
):
    emu = emulator_factory(seed=2, workers=HONEST, realism=FATES)
    client = client_for(emu)
    pool_id = push(client, plan=plan, store=MemoryStore()).pool_id
    emu.work(pool_id)
    first = statuses(emu, pool_id)
    assert first["ACTIVE"] and first["SKIPPED"] and first["SUBMITTED"]
    assert client.get_pool(pool_id).is_open()  # never closes while suites are ACTIVE
    got = {a.status.value for a in client.get_assignments(pool_id=pool_id)}
    assert got == set(first)  # toloka-kit parses every state
    active = [a for a, r in emu.state.assignments.items() if r["status"] == "ACTIVE"]
    while client.get_pool(pool_id).is_open():
        emu.work(pool_id)
    final = statuses(emu, pool_id)
    assert final["EXPIRED"] and not final["ACTIVE"]
    assert {emu.state.assignments[a]["status"] for a in active} <= {"SUBMITTED", "EXPIRED"}
    for record in emu.state.assignments.values():
        if record["status"] in ("SKIPPED", "EXPIRED"):
            assert "solutions" not in record  # nothing was submitted
    # every real task still got its full overlap, from submitted suites, distinct workers
    answers = pull(client, pool_id=pool_id).answers
    real = answers[~answers["is_golden"]]
    per_task = real.groupby("task")["worker"].agg(["size", "nunique"])
    assert set(per_task.index) == set(plan.items["item_id"])
    assert (per_task["size"] == plan.config.overlap).all()
    assert (per_task["nunique"] == per_task["size"]).all()
    assert set(answers["assignment_status"]) == {"SUBMITTED"}


def test_pull_never_passes_an_active_suite(emulator_factory, client_for, plan):
    emu = emulator_factory(seed=5, workers=HONEST, realism=Realism(active=0.4))
    client = client_for(emu)
    pool_id = push(client, plan=plan, store=MemoryStore()).pool_id
    emu.work(pool_id)
    first = pull(client, pool_id=pool_id)
    lowest_active = min(a for a, r in emu.state.assignments.items() if r["status"] == "ACTIVE")
    assert first.cursor is None or first.cursor < lowest_active
    emu.work(pool_id)  # the ACTIVE suites are submitted now
    later = pull(client, pool_id=pool_id, cursor=first.cursor)
    seen = set(first.answers["assignment_id"]) | set(later.answers["assignment_id"])
    submitted = {a for a, r in emu.state.assignments.items() if r["status"] == "SUBMITTED"}
    assert lowest_active in seen and submitted <= seen


def test_operations_are_pending_before_success(emulator_factory, client_for, plan):
    emu = emulator_factory(seed=1, workers=HONEST, realism=Realism(pending_polls=2))
    client = client_for(emu)
    pool_id = push(client, plan=plan, store=MemoryStore()).pool_id  # upload + open waited for
    assert client.get_pool(pool_id).is_open()
    assert len(list(client.get_tasks(pool_id=pool_id))) == len(plan.items) + len(plan.golden)
    op = client.close_pool_async(pool_id)
    assert op.status == tc.operations.Operation.Status.PENDING
    assert client.get_pool(pool_id).is_open()  # nothing happens before the operation runs
    assert client.get_operation(op.id).status == tc.operations.Operation.Status.RUNNING
    assert client.wait_operation(op).status == tc.operations.Operation.Status.SUCCESS
    assert not client.get_pool(pool_id).is_open()
    # aggregation is an operation too
    client.open_pool(pool_id)
    emu.work(pool_id)
    agg = client.aggregate_solutions_by_pool(
        type="DAWID_SKENE", pool_id=pool_id,
        fields=[tc.aggregation.PoolAggregatedSolutionRequest.Field(name="label")],
    )
    assert agg.status == tc.operations.Operation.Status.PENDING
    done = client.wait_operation(agg)
    solutions = list(client.get_aggregated_solutions(done.id))
    real_ids = {t.id for t in client.get_tasks(pool_id=pool_id) if not t.known_solutions}
    assert real_ids <= {s.task_id for s in solutions}  # every answered task, once
    assert len(solutions) == len({s.task_id for s in solutions})
    assert all(0 < s.confidence <= 1 and s.output_values["label"] for s in solutions)


def test_429_has_tolokas_body_and_is_retried_by_toloka_kit(emulator_factory, client_for):
    emu = emulator_factory(seed=0, workers=2,
                           faults=[Fault("GET /api/v1/requester", kind="429", nth=1)])
    client = client_for(emu)
    client.get_requester()
    assert emu.calls("GET /api/v1/requester") == [429, 200]
    raw = httpx.get(emu.url + "/api/v1/pools", headers={"Authorization": "OAuth x"})
    assert raw.status_code == 200  # a 429 only where injected
    emu2 = emulator_factory(seed=0, workers=2,
                            faults=[Fault("GET /api/v1/requester", kind="429")])
    r = httpx.get(emu2.url + "/api/v1/requester", headers={"Authorization": "OAuth x"})
    assert r.status_code == 429 and r.headers["Retry-After"] == "0"
    assert r.json()["code"] == "TOO_MANY_REQUESTS" and r.json()["payload"]["interval"] == "MIN"
    with pytest.raises(TooManyRequestsApiError):  # out of retries: toloka-kit's own error
        client_for(emu2, retries=2).get_requester()
    assert emu2.calls("GET /api/v1/requester") == [429, 429, 429, 429]


def _flow(emulator_factory, client_for, plan, truth, *, workers, realism=None, seed=7):
    emu = emulator_factory(seed=seed, workers=workers, truth=truth, realism=realism)
    client = client_for(emu, retries=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # toloka-kit's progress bar in wait_operation
        result = run_flow(client, plan=plan, store=MemoryStore(), wait=emu.work, method="mv")
    return emu, result


def _submitted_answers(emu, pool_id: str) -> set[tuple[str, str]]:
    """(assignment, item) of every suite a worker submitted (review may have rejected it)."""
    return {
        (aid, t["input_values"]["item_id"])
        for aid, r in emu.state.assignments.items()
        if r["pool_id"] == pool_id and r["status"] in ("SUBMITTED", "ACCEPTED", "REJECTED")
        for t in r["tasks"]
    }


def test_429s_and_pending_operations_change_nothing(emulator_factory, client_for, plan, truth):
    _, clean = _flow(emulator_factory, client_for, plan, truth, workers=12)
    emu, noisy = _flow(emulator_factory, client_for, plan, truth, workers=12,
                       realism=Realism(too_many_requests=0.15, pending_polls=1))
    assert Counter(s for _, _, s in emu.requests)[429] > 10
    pd.testing.assert_frame_equal(clean.verdicts, noisy.verdicts)
    cols = ["task", "worker", "label", "assignment_id", "assignment_status"]
    pd.testing.assert_frame_equal(clean.answers[cols], noisy.answers[cols])


def test_end_to_end_with_every_fault(emulator_factory, client_for, plan, truth):
    """push → workers answer with ACTIVE / SKIPPED / EXPIRED suites, PENDING operations
    and 429s → pull → review → aggregate: each item gets exactly the answers submitted,
    none twice, none from a skipped or expired suite, and the same decisions as a run
    without the faults."""
    workers = [SimWorker(f"p{i}", accuracy=1.0, seconds_per_task=10) for i in range(10)]
    _, clean = _flow(emulator_factory, client_for, plan, truth, workers=workers)
    realism = dataclasses.replace(Realism.real_pool(), pending_polls=1, quality_control=False)
    emu, faulty = _flow(emulator_factory, client_for, plan, truth, workers=workers,
                        realism=realism)
    pool_id = faulty.push.pool_id
    seen = statuses(emu, pool_id)
    assert seen["SKIPPED"] and seen["EXPIRED"] and Counter(s for _, _, s in emu.requests)[429]
    pulled = set(zip(faulty.answers["assignment_id"], faulty.answers["task"], strict=True))
    assert pulled == _submitted_answers(emu, pool_id)  # exactly what was submitted
    assert not faulty.answers.duplicated(["assignment_id", "task"]).any()
    lapsed = {a for a, r in emu.state.assignments.items() if r["status"] in ("SKIPPED",
                                                                            "EXPIRED")}
    assert not lapsed & set(faulty.answers["assignment_id"])
    assert (faulty.verdicts["status"] == "decided").all()  # no task lost
    pd.testing.assert_frame_equal(
        clean.verdicts[["task", "label", "status"]], faulty.verdicts[["task", "label", "status"]]
    )
    assert (faulty.verdicts.set_index("task")["label"] == pd.Series(truth)).all()


def test_toloka_enforces_the_pool_rules_and_quorum_does_not_ban_again(
    emulator_factory, client_for, plan
):
    spammer = SimWorker("spam", seconds_per_task=5, kind="constant")  # only gold catches it
    speedy = SimWorker("speedy", accuracy=0.9, seconds_per_task=0.5)
    cfg = CrowdConfig(tasks_per_suite=5, quality_control="toloka")
    plan = dataclasses.replace(plan, config=cfg)
    emu = emulator_factory(seed=4, workers=[spammer, speedy, *HONEST],
                           realism=Realism(quality_control=True))
    client = client_for(emu)
    pushed = push(client, plan=plan, store=MemoryStore())
    rules = {c.collector_config.type.value for c in client.get_pool(pushed.pool_id)
             .quality_control.configs}
    assert rules == {"GOLDEN_SET", "ASSIGNMENT_SUBMIT_TIME", "SKIPPED_IN_ROW_ASSIGNMENTS"}
    emu.work(pushed.pool_id)
    fired = {(w, why) for _, w, why in emu.simulator.quality.fired}
    assert fired == {("spam", "golden accuracy"), ("speedy", "fast answers")}
    answers = pull(client, pool_id=pushed.pool_id).answers
    puts_before = len(emu.calls("PUT /api/v1/user-restrictions"))
    result = review(client, answers=answers, project_id=pushed.project_id, config=cfg)
    assert len(emu.calls("PUT /api/v1/user-restrictions")) == puts_before  # no ban repeated
    assert sorted(result.banned) == ["spam", "speedy"]
    workers = result.workers.set_index("worker")
    assert set(workers.loc[["spam", "speedy"], "banned_by"]) == {"toloka"}
    rejected = result.decisions[result.decisions["verdict"] == "REJECTED"]
    assert set(rejected["worker"]) == {"spam", "speedy"}
    assert len(emu.state.restrictions) == 2


def test_quorum_enforced_rules_stay_out_of_the_pool(emulator_factory, client_for, plan):
    spammer = SimWorker("spam", seconds_per_task=5, kind="constant")
    emu = emulator_factory(seed=4, workers=[spammer, *HONEST],
                           realism=Realism(quality_control=True))
    client = client_for(emu)
    pushed = push(client, plan=plan, store=MemoryStore())  # quality_control="quorum"
    rules = {c.collector_config.type.value for c in client.get_pool(pushed.pool_id)
             .quality_control.configs}
    assert rules == {"SKIPPED_IN_ROW_ASSIGNMENTS"}  # the only rule Quorum cannot apply
    emu.work(pushed.pool_id)
    assert emu.simulator.quality.fired == []
    answers = pull(client, pool_id=pushed.pool_id).answers
    result = review(client, answers=answers, project_id=pushed.project_id, config=plan.config)
    assert result.banned == ["spam"]
    assert set(result.workers.set_index("worker").loc[["spam"], "banned_by"]) == {"quorum"}
    assert len(emu.calls("PUT /api/v1/user-restrictions")) == 1


def test_the_confidence_bound_stays_quorums_in_toloka_mode():
    cfg = CrowdConfig(quality_control="toloka", golden_ban_confidence=0.9)
    assert not cfg.toloka_bans_golden and cfg.toloka_bans_fast
    with pytest.raises(ValueError, match="quality_control"):
        CrowdConfig(quality_control="both")


def test_skipping_in_a_row_is_restricted_by_toloka(emulator_factory, client_for, plan):
    emu = emulator_factory(seed=2, workers=HONEST,
                           realism=Realism(skipped=0.6, quality_control=True))
    client = client_for(emu)
    cfg = dataclasses.replace(plan.config, quality_control="toloka")
    pushed = push(client, plan=dataclasses.replace(plan, config=cfg), store=MemoryStore())
    pool_id = pushed.pool_id
    emu.work(pool_id)
    fired = emu.simulator.quality.fired
    assert fired and {why for _, _, why in fired} == {"skipped suites"}
    banned = {w for _, w, _ in fired}
    for record in emu.state.assignments.values():  # no suite after the ban
        if record["user_id"] in banned:
            assert record["status"] in ("SKIPPED", "SUBMITTED")
    # a pause, not a verdict on the answers: review neither bans nor rejects for it
    answers = pull(client, pool_id=pool_id).answers
    result = review(client, answers=answers, project_id=pushed.project_id, config=cfg)
    assert result.banned == [] and set(result.decisions["verdict"]) == {"ACCEPTED"}


def test_a_suite_submitted_while_pull_pages_is_not_skipped(emulator_factory, client_for, plan):
    """An ACTIVE suite submitted between the pages and the end of a pull: the cursor must
    not pass it (a probe for ACTIVE suites made only at the end would not see it)."""
    emu = emulator_factory(seed=5, workers=HONEST, realism=Realism(active=0.4))
    client = client_for(emu)
    pool_id = push(client, plan=plan, store=MemoryStore()).pool_id
    emu.work(pool_id)
    was_active = {a for a, r in emu.state.assignments.items() if r["status"] == "ACTIVE"}
    original = client.find_assignments

    def pages_then_time_passes(**request):
        page = original(**request)
        if "ACTIVE" not in request["status"] and not page.has_more:
            with emu.lock:
                emu.simulator.resolve_active()  # the ACTIVE suites are submitted now
        return page

    client.find_assignments = pages_then_time_passes
    first = pull(client, pool_id=pool_id)
    client.find_assignments = original
    later = pull(client, pool_id=pool_id, cursor=first.cursor)
    seen = set(first.answers["assignment_id"]) | set(later.answers["assignment_id"])
    assert was_active and was_active <= seen
