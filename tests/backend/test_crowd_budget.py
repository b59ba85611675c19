"""Budget-aware crowd pushes (issue #13, #8): a daily crowd budget caps what a push
commits, the items likeliest to flip go first, and a spent budget is a sentence."""

from __future__ import annotations

import warnings
from datetime import timedelta

import pytest
from sqlalchemy import select

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from backend.crowdwork.models import CrowdPool, CrowdTask  # noqa: E402
from backend.crowdwork.service import BudgetSpent, push_queue  # noqa: E402
from backend.crowdwork.settings import CrowdSettings  # noqa: E402
from backend.db import session_scope, utcnow  # noqa: E402
from backend.items.models import ItemScore  # noqa: E402
from backend.queues.models import Queue, Task  # noqa: E402
from crowd.emulator import Emulator, SimWorker  # noqa: E402
from tests.backend.test_crowd_support import LABELS, crowd_runtime, seed_queue  # noqa: E402


def _score(item_id: int, top: float, label: str) -> ItemScore:
    rest = (1 - top) / (len(LABELS) - 1)
    return ItemScore(item_id=item_id, model_id="m1", threshold_set_version=None,
                     scores={lab: (top if lab == label else rest) for lab in LABELS},
                     band="ML_UNSURE", created_at=utcnow())


def test_the_daily_budget_caps_a_push_and_takes_the_likeliest_flips_first(settings, policy):
    queue, truth = seed_queue(settings, policy, n=20, n_golden=5)
    with session_scope() as s:
        real = sorted(s.scalars(select(Task.item_id).join(Queue).where(Queue.name == queue)))
        sure, unsure = real[:10], real[10:]  # the oldest ten: the classifier is sure
        s.add_all([_score(i, 0.99, truth[str(i)]) for i in sure]
                  + [_score(i, 0.4, truth[str(i)]) for i in unsure])
    # 2 answers per item at the start, 1 control task per 4 real ones: $0.025 an item
    crowd = CrowdSettings(overlap=2, min_answers=2, max_overlap=3, tasks_per_suite=4,
                          golden_per_suite=1, aggregation="mv", reward_per_task=0.01,
                          daily_budget=0.2)
    workers = [SimWorker(f"w{i}", accuracy=0.95, seconds_per_task=10.0) for i in range(4)]
    now = utcnow()
    with Emulator(seed=3, workers=workers, truth=truth) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url)
        first = push_queue(rt=rt, queue_name=queue, now=now)
        assert first.items == 8 and first.left_pending == 12
        with session_scope() as s:
            pushed = set(s.scalars(select(CrowdTask.item_id).where(
                CrowdTask.pool_id == first.pool_id, CrowdTask.is_golden.is_(False))))
            budget = s.get(CrowdPool, first.pool_id).config["budget"]
        assert pushed <= set(unsure)  # without the budget: the oldest, i.e. the sure ones
        assert budget["per_item"] == pytest.approx(0.025)
        assert budget["estimated_cost"] == pytest.approx(0.2)
        # the same day: the open pool's estimate holds the whole budget
        with pytest.raises(BudgetSpent, match=r"daily budget .* is committed: \$0\.20 today"):
            push_queue(rt=rt, queue_name=queue, now=now + timedelta(minutes=5))
        # the next day the budget is new: the two unsure items left, then the sure ones
        nxt = push_queue(rt=rt, queue_name=queue, now=now + timedelta(days=1))
        with session_scope() as s:
            second = set(s.scalars(select(CrowdTask.item_id).where(
                CrowdTask.pool_id == nxt.pool_id, CrowdTask.is_golden.is_(False))))
    assert nxt.items == 8 and set(unsure) - pushed <= second


def test_without_a_budget_a_push_takes_everything(settings, policy):
    queue, truth = seed_queue(settings, policy, n=12, n_golden=5)
    crowd = CrowdSettings(overlap=2, tasks_per_suite=4, aggregation="mv")
    with Emulator(seed=3, workers=4, truth=truth) as emu:
        s = push_queue(rt=crowd_runtime(settings, crowd, policy, emu.url), queue_name=queue)
    assert s.items == 12 and s.left_pending == 0
