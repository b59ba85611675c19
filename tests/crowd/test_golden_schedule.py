"""Per-worker control tasks (issue #13, #4): ``golden_schedule`` is the pool's
``golden_task_distribution_function``: a worker new to the project is checked on their
first tasks, a worker who has done many in the project (an earlier pool) rarely."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from crowd.config import CrowdConfig
from crowd.emulator import SimWorker
from crowd.flow import run_flow
from crowd.store import MemoryStore
from crowd.toloka import golden_distribution


def _control_per_worker(result) -> pd.Series:  # noqa: ANN001
    paid = result.answers[result.answers["assignment_status"] != "REJECTED"]
    return paid[paid["is_golden"].astype(bool)].groupby("worker").size()


def _two_pools(emulator_factory, client_for, plan, truth, config):  # noqa: ANN001, ANN202
    workers = [SimWorker(f"w{i}", accuracy=0.95, seconds_per_task=10) for i in range(4)]
    emu = emulator_factory(seed=4, workers=workers, truth=truth)
    client, store = client_for(emu), MemoryStore()
    items = plan.items
    first = dataclasses.replace(plan, config=config, items=items.iloc[:30])
    second = dataclasses.replace(plan, key=plan.key + "-b", config=config,
                                 items=items.iloc[30:].reset_index(drop=True))
    a = run_flow(client, plan=first, store=store, wait=emu.work, method="mv")
    b = run_flow(client, plan=second, store=store, wait=emu.work, method="mv")
    return a, b


def test_the_schedule_checks_newcomers_and_spares_veterans(emulator_factory, client_for,
                                                           plan, truth):
    base = CrowdConfig(tasks_per_suite=5, golden_per_suite=1, overlap=2, min_answers=2,
                       max_overlap=2)
    sched = dataclasses.replace(base, golden_schedule=((0, 14, 5), (15, 100_000, 1000)))
    every_a, every_b = _two_pools(emulator_factory, client_for, plan, truth, base)
    new_a, new_b = _two_pools(emulator_factory, client_for, plan, truth, sched)
    # without a schedule every suite carries a control task, in both pools
    for r in (every_a, every_b):
        suites = r.answers.groupby("assignment_id")["is_golden"].sum()
        assert (suites == 1).all()
    # with it: a control task on each of a worker's first three suites in the project
    # (positions 0, 5, 10), one at position 15, then none for 1,000 tasks
    per_worker = _control_per_worker(new_a)
    assert per_worker.max() <= 4 and per_worker.sum() > 0
    # the second pool is the same project: its veterans get no control task at all
    assert _control_per_worker(new_b).sum() == 0
    assert _control_per_worker(every_b).sum() > 10
    # the decisions stand on the same answers either way: real answers per item alike
    real = lambda r: (~r.answers["is_golden"].astype(bool)).sum()  # noqa: E731
    assert real(new_b) == real(every_b)


def test_the_schedule_is_the_pools_distribution_function():
    cfg = CrowdConfig.from_mapping({"golden_schedule": [[0, 20, 1], [21, 500, 10]]})
    fn = golden_distribution(cfg)
    assert fn.scope.value == "PROJECT" and fn.window_days == 365
    assert [(i.from_, i.to, i.frequency) for i in fn.intervals] == [(0, 20, 1), (21, 500, 10)]
    assert golden_distribution(CrowdConfig()) is None
    with pytest.raises(ValueError, match="from, to, frequency"):
        CrowdConfig(golden_schedule=((5, 1, 1),))
