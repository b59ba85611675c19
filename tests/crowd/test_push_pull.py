"""Push resumes after crashes without duplicates; pull survives 5xx and time-outs."""

from __future__ import annotations

import pandas as pd
import pytest
import toloka.client as tc

from crowd.emulator import Fault
from crowd.pull import merge_answers, pull
from crowd.push import push
from crowd.store import JsonFileStore, MemoryStore


def _tasks_in(emu, pool_id: str) -> list[str]:
    return [emu.state.tasks[t]["input_values"]["item_id"] for t in emu.state.pool_tasks[pool_id]]


def test_crash_between_pool_created_and_tasks_uploaded_resumes(
    emulator_factory, client_for, plan, tmp_path
):
    emu = emulator_factory(
        seed=0, workers=5, faults=[Fault("POST /api/v1/tasks", kind="500", nth=1)]
    )
    store = JsonFileStore(tmp_path / "crowd.json")
    with pytest.raises(tc.exceptions.InternalApiError):
        push(client_for(emu, retries=0), plan=plan, store=store)  # dies after the pool exists
    assert len(emu.state.pools) == 1 and emu.state.tasks == {}
    assert store.get(f"pool:{plan.key}")["pool_id_phase"] == "created"
    result = push(client_for(emu), plan=plan, store=store)
    assert len(emu.state.pools) == 1 and len(emu.state.projects) == 1
    assert sorted(_tasks_in(emu, result.pool_id)) == sorted(
        [*plan.items["item_id"], *plan.golden["item_id"]]
    )
    assert emu.state.pools[result.pool_id]["status"] == "OPEN"


def test_lost_store_and_lost_reply_still_no_duplicates(emulator_factory, client_for, plan):
    # The upload succeeds on the server but its reply never arrives, and the store is lost too:
    # push must find the pool by its marker and the tasks by item_id.
    emu = emulator_factory(
        seed=0,
        workers=5,
        faults=[Fault("GET /api/v1/operations/{id}/log", kind="timeout", nth=1, seconds=1.5)],
    )
    with pytest.raises(Exception):  # noqa: B017 - toloka-kit surfaces the read time-out
        push(client_for(emu, retries=0, timeout=0.5), plan=plan, store=MemoryStore())
    result = push(client_for(emu), plan=plan, store=MemoryStore())
    assert result.created == 0 and result.reused == len(plan.items) + len(plan.golden)
    assert len(emu.state.pools) == 1 and len(emu.state.tasks) == len(plan.items) + len(plan.golden)


def test_upload_retried_after_timeout_uses_the_same_operation(emulator_factory, client_for, plan):
    emu = emulator_factory(
        seed=0, workers=5, faults=[Fault("POST /api/v1/tasks", kind="timeout", nth=1, seconds=1.0)]
    )
    result = push(client_for(emu, timeout=0.5), plan=plan, store=MemoryStore())
    assert emu.calls("POST /api/v1/tasks")[:2] == [202, 409]  # second try: OPERATION_ALREADY_EXISTS
    assert len(emu.state.tasks) == len(result.task_ids) == len(plan.items) + len(plan.golden)


def test_pull_with_faults_equals_pull_without(emulator_factory, client_for, plan):
    def run(**faults) -> pd.DataFrame:
        emu = emulator_factory(seed=5, workers=12, **faults)
        client = client_for(emu, timeout=0.5, retries=8)
        pool_id = push(client, plan=plan, store=MemoryStore()).pool_id
        answers, cursor = None, None
        for _ in range(4):  # the crowd works in bursts, we pull incrementally
            emu.work(pool_id, n=6)
            got = pull(client, pool_id=pool_id, cursor=cursor, batch_size=4)
            answers = got.answers if answers is None else merge_answers(answers, got.answers)
            cursor = got.cursor
        return answers.sort_values(["assignment_id", "task"]).reset_index(drop=True)

    clean = run()
    noisy = run(
        fault_rate=0.25,
        faults=[
            Fault("GET /api/v1/assignments", kind="timeout", nth=2, seconds=1.0),
            Fault("GET /api/v1/assignments", kind="503", nth=3),
        ],
    )
    assert len(clean) == 4 * 6 * 6  # 24 suites of 5 real + 1 control task
    assert not clean.duplicated(["assignment_id", "task"]).any()
    pd.testing.assert_frame_equal(clean, noisy)


def test_pull_is_incremental(emulator_factory, client_for, plan):
    emu = emulator_factory(seed=2, workers=6)
    client = client_for(emu)
    pool_id = push(client, plan=plan, store=MemoryStore()).pool_id
    emu.work(pool_id, n=3)
    first = pull(client, pool_id=pool_id)
    second = pull(client, pool_id=pool_id, cursor=first.cursor)
    assert first.n_assignments == 3 and second.n_assignments == 0
    emu.work(pool_id, n=2)
    third = pull(client, pool_id=pool_id, cursor=first.cursor)
    assert third.n_assignments == 2
    assert set(third.answers["assignment_id"]).isdisjoint(first.answers["assignment_id"])
