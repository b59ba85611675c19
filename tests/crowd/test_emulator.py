"""The emulator speaks enough Toloka for the real toloka-kit client."""

from __future__ import annotations

import pandas as pd
import pytest
import toloka.client as tc
from toloka.client.exceptions import DoesNotExistApiError, ValidationApiError

from crowd.config import CrowdConfig
from crowd.emulator import Emulator, Fault, SimWorker
from crowd.pull import pull
from crowd.push import push
from crowd.store import MemoryStore
from crowd.toloka import build_pool, build_project, build_tasks
from tests.crowd.conftest import POLICY


def test_project_pool_tasks_round_trip(emulator_factory, client_for, items):
    emu = emulator_factory(seed=1, workers=5)
    client = client_for(emu)
    project = client.create_project(build_project(key="p", policy=POLICY))
    assert client.get_project(project.id).public_name == project.public_name
    pool = client.create_pool(build_pool(project_id=project.id, key="pool-a", config=CrowdConfig()))
    assert client.get_pool(pool.id).status == tc.Pool.Status.CLOSED
    result = client.create_tasks(
        build_tasks(pool_id=pool.id, items=items, overlap=2), allow_defaults=True, open_pool=False
    )
    assert len(result.items) == len(items)
    assert [t.input_values["item_id"] for t in result.items.values()] == list(items["item_id"])
    assert client.open_pool_async(pool.id).status == tc.operations.Operation.Status.SUCCESS
    assert client.open_pool_async(pool.id) is None  # already open: 204
    assert len(list(client.get_tasks(pool_id=pool.id, batch_size=7))) == len(items)


def test_errors_have_toloka_shape(emulator_factory, client_for):
    client = client_for(emulator_factory(seed=0, workers=1))
    with pytest.raises(DoesNotExistApiError) as missing:
        client.get_pool("424242")
    assert missing.value.status_code == 404 and missing.value.request_id.startswith("emu-")
    project = client.create_project(build_project(key="p", policy=POLICY))
    bad = build_pool(project_id=project.id, key="k", config=CrowdConfig())
    bad.reward_per_assignment = 0.001
    with pytest.raises(ValidationApiError) as invalid:
        client.create_pool(bad)
    assert "reward_per_assignment" in invalid.value.payload


def test_assignments_page_with_has_more(emulator_factory, client_for, plan):
    emu = emulator_factory(seed=3, workers=8)
    client = client_for(emu)
    pushed = push(client, plan=plan, store=MemoryStore())
    assert emu.work(pushed.pool_id) > 0
    page = client.find_assignments(pool_id=pushed.pool_id, sort=["id"], limit=5)
    assert len(page.items) == 5 and page.has_more
    everything = list(client.get_assignments(pool_id=pushed.pool_id, batch_size=5))
    assert len({a.id for a in everything}) == len(emu.state.assignments)


def test_same_seed_same_answers(plan):
    def answers(seed: int) -> pd.DataFrame:
        with Emulator(seed=seed, workers=10) as emu:
            from crowd.toloka import make_client

            client = make_client(url=emu.url)
            pool_id = push(client, plan=plan, store=MemoryStore()).pool_id
            emu.work(pool_id)
            return pull(client, pool_id=pool_id).answers[
                ["task", "worker", "label", "time_spent_s"]
            ]

    pd.testing.assert_frame_equal(answers(7), answers(7))
    assert not answers(7).equals(answers(8))


def test_replay_workers_give_recorded_answers(emulator_factory, client_for, plan):
    recorded = pd.DataFrame(
        [
            {"task_key": item, "worker": w, "label": lab}
            for i, item in enumerate(plan.items["item_id"])
            for w, lab in (
                ("alice", "ok"),
                ("bob", "adult" if i % 2 else "ok"),
                ("carol", "prohibited"),
            )
        ]
    )
    emu = emulator_factory(seed=0, replay=recorded)
    client = client_for(emu)
    pool_id = push(client, plan=plan, store=MemoryStore()).pool_id
    emu.work(pool_id)
    got = pull(client, pool_id=pool_id).answers
    real = got[~got["is_golden"]]
    merged = real.merge(recorded, left_on=["task", "worker"], right_on=["task_key", "worker"])
    assert len(merged) == len(real) == 2 * len(plan.items)  # overlap 2 of the 3 recorded answers
    assert (merged["label_x"] == merged["label_y"]).all()
    assert set(real["worker"]) <= {"alice", "bob", "carol"}
    assert client.get_pool(pool_id).status == tc.Pool.Status.CLOSED  # done: closes itself


def test_nth_call_fault_is_retried(emulator_factory, client_for):
    emu = emulator_factory(
        seed=0,
        workers=[SimWorker("w1")],
        faults=[Fault("POST /api/v1/projects", kind="503", nth=1)],
    )
    client = client_for(emu)
    client.create_project(build_project(key="p", policy=POLICY))
    assert emu.calls("POST /api/v1/projects") == [503, 201]


def test_every_call_gets_json_delete_included(emulator_factory, client_for):
    """toloka-kit's DELETE (an unban) works; what the emulator cannot do is answered in
    Toloka's error shape (404 / 501 JSON), never http.server's HTML page."""
    import datetime as dt

    import httpx

    emu = emulator_factory(seed=0, workers=2)
    client = client_for(emu)
    project = client.create_project(build_project(key="unban", policy=[]))
    restriction = client.set_user_restriction(
        tc.user_restriction.ProjectUserRestriction(
            user_id="w1", project_id=project.id, private_comment="test",
            will_expire=dt.datetime(2030, 1, 1),
        )
    )
    client.delete_user_restriction(restriction.id)
    assert list(client.get_user_restrictions(user_id="w1")) == []
    with pytest.raises(DoesNotExistApiError):
        client.delete_user_restriction(restriction.id)
    headers = {"Authorization": "OAuth x"}
    for method, path, status in [
        ("OPTIONS", "/api/v1/pools", 501),
        ("DELETE", "/api/v1/pools/1", 404),
        ("GET", "/api/v1/webhook-subscriptions", 404),
    ]:
        r = httpx.request(method, emu.url + path, headers=headers)
        assert r.status_code == status and r.headers["content-type"] == "application/json"
        assert set(r.json()) >= {"code", "message", "request_id"}
