"""Moderators' daily capacity (issue #13, #8): beyond it, the pending tasks of the kinds that
may overflow go to the crowd, the least likely to flip first; a higher-value arrival takes
the room of the lowest; what the crowd returns, spot checks and held work never move."""

from __future__ import annotations

import threading
import warnings
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from backend.crowdwork.service import pull_pool, push_queue  # noqa: E402
from backend.crowdwork.settings import CrowdSettings  # noqa: E402
from backend.db import get_sessionmaker, session_scope, utcnow  # noqa: E402
from backend.decisions.models import DecisionEvent, ItemStatus  # noqa: E402
from backend.errors import LeaseLost, ValidationFailed  # noqa: E402
from backend.items.service import ingest  # noqa: E402
from backend.queues import service as queues  # noqa: E402
from backend.queues.models import Queue, Task  # noqa: E402
from backend.queues.overflow import capacity, check_settings, rebalance  # noqa: E402
from backend.queues.work import submit_verdict  # noqa: E402
from backend.settings import get_settings  # noqa: E402
from backend.users.models import User  # noqa: E402
from crowd.emulator import Emulator, SimWorker  # noqa: E402
from tests.backend.test_crowd_support import LABELS, crowd_runtime  # noqa: E402
from tests.conftest import auth, item_row  # noqa: E402


@pytest.fixture
def capped(settings, monkeypatch):  # noqa: ANN001, ANN201
    """Moderators work 6 tasks a day; ML_BAD_MIDDLE may overflow to OVERFLOW (the crowd)."""
    monkeypatch.setenv("QUORUM_MODERATOR_DAILY_CAPACITY", "6")
    monkeypatch.setenv("QUORUM_MODERATOR_OVERFLOW_FROM", '["ML_BAD_MIDDLE"]')
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def _items(s, policy, n: int, *, start: int = 0) -> list[int]:  # noqa: ANN001
    _, ids = ingest(session=s, rows=[item_row(start + i, external_id=f"O{start + i}")
                                     for i in range(n)], policy=policy, now=utcnow())
    return ids


def _states(s, kind: str) -> dict[int, str]:  # noqa: ANN001
    return dict(s.execute(select(Task.item_id, Task.state).join(Queue)
                          .where(Queue.kind == kind)).tuples().all())


def _moderator(s, name: str = "mod") -> User:  # noqa: ANN001
    from backend.users.service import create_user

    return create_user(session=s, username=name, role="moderator", queue_kinds=["*"])


def test_beyond_the_capacity_the_least_likely_to_flip_go_to_the_crowd(capped, policy):
    now = utcnow()
    with session_scope() as s:
        ids = _items(s, policy, 10)
        # confidence 0.50 (likeliest to flip) ... 0.95 (surest)
        sure = {i: 0.5 + 0.05 * k for k, i in enumerate(ids)}
        queues.enqueue(session=s, kind="ML_BAD_MIDDLE", item_ids=ids, now=now,
                       settings=capped, confidences=sure)
        # two spot checks: they take room but never move
        spot = _items(s, policy, 2, start=100)
        queues.enqueue(session=s, kind="SPOT_CHECK", item_ids=spot, now=now, settings=capped)
        state = rebalance(session=s, settings=capped, now=now)
    assert (state.fixed_pending, state.moved_now) == (2, 6)  # room 6 − 2 = 4 of 10 stay
    with session_scope() as s:
        mods = _states(s, "ML_BAD_MIDDLE")
        crowd = s.execute(select(Task.item_id, Task.state, Task.payload, Queue.audience)
                          .join(Queue).where(Queue.kind == "OVERFLOW")).all()
        status = dict(s.execute(select(ItemStatus.item_id, ItemStatus.queue_kind)
                                .where(ItemStatus.item_id.in_(ids))).tuples().all())
        spot_states = set(_states(s, "SPOT_CHECK").values())
    kept = [i for i in ids if mods[i] == "pending"]
    assert kept == ids[:4]  # the four least sure stay with moderators
    assert {i for i in ids if mods[i] == "overflow"} == set(ids[4:])
    assert {r.item_id for r in crowd} == set(ids[4:])
    assert {r.state for r in crowd} == {"pending"} and {r.audience for r in crowd} == {"crowd"}
    assert all(r.payload["overflow_from"]["kind"] == "ML_BAD_MIDDLE" for r in crowd)
    assert {status[i] for i in ids[4:]} == {"OVERFLOW"}
    assert {status[i] for i in ids[:4]} == {"ML_BAD_MIDDLE"}
    assert spot_states == {"pending"}
    with session_scope() as s:  # a second run with nothing new moves nothing
        again = rebalance(session=s, settings=capped, now=now)
    assert (again.moved_now, again.moved_today, again.room) == (0, 6, 4)


def test_a_higher_value_arrival_displaces_the_lowest_still_pending(capped, policy):
    now = utcnow()
    with session_scope() as s:
        first = _items(s, policy, 6)
        queues.enqueue(session=s, kind="ML_BAD_MIDDLE", item_ids=first, now=now,
                       settings=capped, confidences={i: 0.7 for i in first})
        assert rebalance(session=s, settings=capped, now=now).moved_now == 0  # fits
    with session_scope() as s:
        late = _items(s, policy, 2, start=50)
        queues.enqueue(session=s, kind="ML_BAD_MIDDLE", item_ids=late, now=now,
                       settings=capped, confidences={late[0]: 0.55, late[1]: 0.9})
        moved = rebalance(session=s, settings=capped, now=now).moved_now
    with session_scope() as s:
        mods = _states(s, "ML_BAD_MIDDLE")
    # the unsure arrival (0.55) takes a place: the surest pair moves (0.9, then the newest
    # of the 0.7s); a task that moved never comes back
    assert moved == 2
    assert mods[late[0]] == "pending" and mods[late[1]] == "overflow"
    assert [mods[i] for i in first] == ["pending"] * 5 + ["overflow"]


def test_work_done_today_and_held_leases_use_the_capacity(capped, policy):
    now = utcnow()
    with session_scope() as s:
        user = _moderator(s)
        ids = _items(s, policy, 8)
        queues.enqueue(session=s, kind="ML_BAD_MIDDLE", item_ids=ids, now=now,
                       settings=capped, confidences={i: 0.6 for i in ids})
        t1 = queues.lease_next(session=s, user=user, now=now, settings=capped)
        submit_verdict(session=s, task_id=t1.id, user=user, label="ok", policy=policy, now=now)
        t2 = queues.lease_next(session=s, user=user, now=now, settings=capped)
        # 1 done + 1 held of 6: room for 4 of the 6 still pending
        state = rebalance(session=s, settings=capped, now=now)
        assert (state.done_today, state.held, state.moved_now) == (1, 1, 2)
        held = t2.id
    with session_scope() as s:
        assert s.get(Task, held).state == "leased"  # never moved under its holder
        # yesterday's work does not use today's capacity
        tomorrow = capacity(session=s, settings=capped, now=now + timedelta(days=1))
        assert tomorrow.done_today == 0 and tomorrow.moved_today == 0


def test_a_moved_task_refuses_a_verdict_with_a_sentence(capped, policy):
    """A moderator leased a task, let the lease lapse, someone else took and released it:
    it moved to the crowd, and the first moderator's late verdict says why it is refused."""
    now = utcnow()
    with session_scope() as s:
        first, second = _moderator(s, "first"), _moderator(s, "second")
        ids = _items(s, policy, 8)
        queues.enqueue(session=s, kind="ML_BAD_MIDDLE", item_ids=ids, now=now,
                       settings=capped, confidences={i: 0.6 + 0.01 * k
                                                     for k, i in enumerate(ids)})
        task = queues.lease_next(session=s, user=first, now=now, settings=capped,
                                 lease_seconds=10)
        task_id, first_id, second_id = task.id, first.id, second.id
    later = now + timedelta(minutes=5)
    with session_scope() as s:
        queues.expire_leases(session=s, now=later)
        # an expired lease its holder may still answer is held work: it stays
        assert rebalance(session=s, settings=capped, now=later).moved_now == 2
        assert s.get(Task, task_id).state == "pending"
        again = queues.lease_next(session=s, user=s.get(User, second_id), now=later,
                                  settings=capped)
        assert again.id == task_id
        queues.release(session=s, task=again, user=s.get(User, second_id), now=later)
    with session_scope() as s:  # nobody holds it now; it is re-scored as sure, and an
        # unsure arrival takes its place
        s.get(Task, task_id).confidence = 0.99
        new = _items(s, policy, 1, start=70)
        queues.enqueue(session=s, kind="ML_BAD_MIDDLE", item_ids=new, now=later,
                       settings=capped, confidences={new[0]: 0.5})
        assert rebalance(session=s, settings=capped, now=later).moved_now == 1
        assert s.get(Task, task_id).state == "overflow"
    with session_scope() as s, pytest.raises(
            LeaseLost, match="moved to the crowd: moderators' day was full"):
        submit_verdict(session=s, task_id=task_id, user=s.get(User, first_id), label="ok",
                       policy=policy, now=later)


def test_nothing_that_must_stay_with_moderators_may_overflow(capped, monkeypatch):
    for kinds, why in ((["CROWD_DISAGREE"], "may not name CROWD_DISAGREE"),
                       (["SPOT_CHECK", "ML_BAD_MIDDLE"], "may not name SPOT_CHECK"),
                       (["NEW_PRODUCTS"], "names crowd kinds")):
        monkeypatch.setenv("QUORUM_MODERATOR_OVERFLOW_FROM", str(kinds).replace("'", '"'))
        get_settings.cache_clear()
        with pytest.raises(ValidationFailed, match=why):
            check_settings(get_settings())
    monkeypatch.setenv("QUORUM_MODERATOR_OVERFLOW_FROM", '["ML_BAD_MIDDLE"]')
    monkeypatch.setenv("QUORUM_MODERATOR_OVERFLOW_KIND", "ML_BAD_MIDDLE")
    get_settings.cache_clear()
    with pytest.raises(ValidationFailed, match="must be a crowd kind of its own"):
        check_settings(get_settings())


def test_capacity_off_moves_nothing(settings, policy):
    now = utcnow()
    with session_scope() as s:
        ids = _items(s, policy, 10)
        queues.enqueue(session=s, kind="ML_BAD_MIDDLE", item_ids=ids, now=now,
                       settings=settings)
        assert rebalance(session=s, settings=settings, now=now).moved_now == 0
        assert set(_states(s, "ML_BAD_MIDDLE").values()) == {"pending"}


def test_routing_overflows_and_the_crowd_decides_what_moved(capped, policy, monkeypatch):
    """The whole path: routing fills ML_BAD_MIDDLE past the day, the overflow goes to the
    crowd queue, the crowd decides it (one decision per item), the capacity API and the
    queue list say so, and nothing the crowd returns lands in the crowd again."""
    from backend.routing.pipeline import route_items

    now = utcnow()
    truth: dict[str, str] = {}
    with session_scope() as s:
        ids = _items(s, policy, 10)
        golden_rows = [item_row(900 + i, external_id=f"G{i}", golden_label=LABELS[i % 4])
                       for i in range(6)]
        _, gold = ingest(session=s, rows=golden_rows, policy=policy, now=now)
        truth.update({str(i): LABELS[(i * 7) % 4] for i in ids})
        truth.update({str(g): LABELS[k % 4] for k, g in enumerate(gold)})
    monkeypatch.setattr("backend.routing.pipeline.signal_queue",
                        lambda row, settings: "ML_BAD_MIDDLE")
    with session_scope() as s:
        summary = route_items(session=s, item_ids=ids, now=now, settings=capped)
    assert summary.queued["ML_BAD_MIDDLE"] == 10 and summary.overflowed == 4
    with session_scope() as s:
        overflow = s.scalar(select(Queue.name).where(Queue.kind == "OVERFLOW"))
    crowd = CrowdSettings(overlap=3, min_answers=3, max_overlap=5, target_confidence=0.7,
                          tasks_per_suite=2, golden_per_suite=1, aggregation="mv")
    workers = [SimWorker(f"w{i}", accuracy=0.99, seconds_per_task=10.0) for i in range(8)]
    with Emulator(seed=5, workers=workers, truth=truth) as emu:
        rt = crowd_runtime(capped, crowd, policy, emu.url)
        pushed = push_queue(rt=rt, queue_name=overflow)
        assert pushed.items == 4
        for _ in range(6):
            emu.work(pushed.toloka_pool_id)
            if pull_pool(rt=rt, pool_id=pushed.pool_id).state == "closed":
                break
    with session_scope() as s:
        per_item = Counter(s.scalars(select(DecisionEvent.item_id)))
        moved = {i for i, st in _states(s, "ML_BAD_MIDDLE").items() if st == "overflow"}
        returned = set(s.scalars(select(Task.item_id).join(Queue)
                                 .where(Queue.kind == "CROWD_DISAGREE")))
        again = s.scalar(select(func.count()).select_from(Task).join(Queue).where(
            Queue.kind == "OVERFLOW", Task.state.in_(("pending", "leased"))))
    assert len(moved) == 4 and set(per_item) | returned == moved
    assert all(n == 1 for n in per_item.values()) and again == 0


def test_capacity_is_shown_by_the_api_and_the_queue_list(capped, policy, client, make_user):
    now = utcnow()
    with session_scope() as s:
        ids = _items(s, policy, 9)
        queues.enqueue(session=s, kind="ML_BAD_MIDDLE", item_ids=ids, now=now,
                       settings=capped, confidences={i: 0.6 for i in ids})
        rebalance(session=s, settings=capped, now=now)
    _, token = make_user("ana", role="analyst")
    got = client.get("/api/v1/queues/capacity", headers=auth(token)).json()
    assert (got["capacity"], got["moved_today"], got["overflowable_pending"], got["room"]) \
        == (6, 3, 6, 6)
    rows = {r["kind"]: r for r in client.get("/api/v1/queues", headers=auth(token)).json()}
    assert rows["ML_BAD_MIDDLE"]["moved_to_crowd"] == 3
    assert rows["OVERFLOW"]["audience"] == "crowd" and rows["OVERFLOW"]["pending"] == 3
    from tests.web.test_web import PASSWORD, login

    make_user("mia", "moderator", ["ML_BAD_MIDDLE"], password=PASSWORD)
    login(client, "mia")
    page = client.get("/queues").text
    assert "Moderators' day: <b>0</b> done" in page and "<b>3</b> moved to the crowd" in page
    assert "(3 moved to the crowd)" in page


def test_verdicts_racing_rebalances_never_double_an_item(capped, policy, db_url):
    """Moderators lease and answer while rebalances run (threads, one session each):
    every item ends with exactly one task that is live or done — a moderator's, or the
    crowd's — and no verdict is refused."""
    if not db_url.startswith("postgresql"):
        pytest.skip("concurrent writers: PostgreSQL (SQLite serialises every writer)")
    now = utcnow()
    with session_scope() as s:
        ids = _items(s, policy, 60)
        users = [_moderator(s, f"m{k}").id for k in range(4)]
        queues.enqueue(session=s, kind="ML_BAD_MIDDLE", item_ids=ids, now=now,
                       settings=capped, confidences={i: 0.5 + (i % 40) / 100 for i in ids})
    sessions = get_sessionmaker(db_url)
    errors: list[BaseException] = []
    answered: list[int] = []

    def work(uid: int) -> None:
        try:
            for _ in range(3):
                with sessions.begin() as s:
                    user = s.get(User, uid)
                    task = queues.lease_next(session=s, user=user, now=now, settings=capped)
                    if task is None:
                        return
                    submit_verdict(session=s, task_id=task.id, user=user, label="ok",
                                   policy=policy, now=now)
                    answered.append(task.item_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def move() -> None:
        try:
            for _ in range(3):
                with sessions.begin() as s:
                    rebalance(session=s, settings=capped, now=now)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    threads += [threading.Thread(target=move) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with session_scope() as s:
        rebalance(session=s, settings=capped, now=now)
    with session_scope() as s:
        per_item = Counter(s.scalars(select(Task.item_id).where(
            Task.state.in_(("pending", "leased", "done")))))
        mods = s.scalar(select(func.count()).select_from(Task).join(Queue).where(
            Queue.audience == "moderators", Task.state.in_(("pending", "leased", "done"))))
        decided = Counter(s.scalars(select(DecisionEvent.item_id)))
    assert set(per_item) == set(ids) and set(per_item.values()) == {1}
    # a task leased between a rebalance's choice and its UPDATE stays with its moderator
    # (the UPDATE skips it): the day may run over by one task per concurrent moderator
    assert mods <= 6 + len(users) and sorted(decided) == sorted(answered)
    assert set(decided.values()) <= {1}


def test_a_lease_between_the_choice_and_the_move_keeps_the_task(capped, policy, db_url,
                                                                 monkeypatch):
    """The exact interleaving: a moderator leases one of the tasks a rebalance has just
    chosen to move, and commits, before the rebalance's UPDATE. The task stays leased and
    no crowd task is made for its item (the UPDATE's condition, checked by RETURNING)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("interleaved writers: PostgreSQL (on SQLite a rebalance holds the "
                    "write lock from its first statement)")
    from backend.queues import overflow

    now = utcnow()
    with session_scope() as s:
        ids = _items(s, policy, 10)
        user_id = _moderator(s).id
        queues.enqueue(session=s, kind="ML_BAD_MIDDLE", item_ids=ids, now=now,
                       settings=capped, confidences={i: 0.6 for i in ids})
    sessions = get_sessionmaker(db_url)
    real_in_values = overflow.in_values
    stolen: list[int] = []

    def lease_first_then_filter(session, column, values, *a, **kw):  # noqa: ANN001, ANN202
        if column is Task.id and not stolen:
            stolen.append(values[0])
            with sessions.begin() as other:  # a moderator's lease, committed meanwhile
                assert other.execute(
                    Task.__table__.update().where(Task.id == values[0],
                                                  Task.state == "pending")
                    .values(state="leased", lease_owner_id=user_id, leased_at=now,
                            lease_expires_at=now + timedelta(minutes=5))).rowcount == 1
        return real_in_values(session, column, values, *a, **kw)

    monkeypatch.setattr(overflow, "in_values", lease_first_then_filter)
    with session_scope() as s:
        moved = rebalance(session=s, settings=capped, now=now).moved_now
    with session_scope() as s:
        task = s.get(Task, stolen[0])
        crowd_items = set(s.scalars(select(Task.item_id).join(Queue)
                                    .where(Queue.kind == "OVERFLOW")))
    assert moved == 3 and task.state == "leased" and task.lease_owner_id == user_id
    assert task.item_id not in crowd_items and len(crowd_items) == 3


def test_the_cli_moves_and_reports_or_says_why_not(capped, policy, db_url):
    from tests.backend.test_cli import quorum

    if not db_url.startswith("sqlite"):
        pytest.skip("the CLI is exercised once; the service it calls runs on both backends")
    off = quorum(capped, "overflow")
    assert off.returncode == 2 and "QUORUM_MODERATOR_DAILY_CAPACITY is 0" in off.stderr
    now = utcnow()
    with session_scope() as s:
        ids = _items(s, policy, 9)
        queues.enqueue(session=s, kind="ML_BAD_MIDDLE", item_ids=ids, now=now,
                       settings=capped, confidences={i: 0.6 for i in ids})
    env = {"QUORUM_MODERATOR_DAILY_CAPACITY": "6",
           "QUORUM_MODERATOR_OVERFLOW_FROM": '["ML_BAD_MIDDLE"]'}
    r = quorum(capped, "overflow", env=env)
    assert r.returncode == 0, r.stderr
    assert ("moderators today: 0 done, 0 held, 6 waiting, capacity 6; 3 moved to OVERFLOW "
            "today (3 just now)") in r.stdout
    table = quorum(capped, "queues", env=env)
    assert "moved to crowd" in table.stdout and "OVERFLOW_" in table.stdout


def test_no_more_move_than_the_crowds_budget_pays_for(capped, policy, monkeypatch):
    """$0.10 a day at $0.02 an item (two answers, no control tasks, $0.01 each) pays for
    five items; two already wait in a crowd queue, so three of the six over the capacity
    move (the likeliest to flip of them) and the rest stay with moderators."""
    from backend.crowdwork.settings import get_crowd_settings

    monkeypatch.setenv("QUORUM_CROWD_DAILY_BUDGET", "0.10")
    monkeypatch.setenv("QUORUM_CROWD_OVERLAP", "2")
    monkeypatch.setenv("QUORUM_CROWD_MIN_ANSWERS", "2")
    monkeypatch.setenv("QUORUM_CROWD_GOLDEN_PER_SUITE", "0")
    monkeypatch.setenv("QUORUM_CROWD_REWARD_PER_TASK", "0.01")
    get_crowd_settings.cache_clear()
    now = utcnow()
    try:
        with session_scope() as s:
            waiting = _items(s, policy, 2, start=200)
            queues.enqueue(session=s, kind="NEW_PRODUCTS", item_ids=waiting, now=now,
                           settings=capped)
            ids = _items(s, policy, 12)
            queues.enqueue(session=s, kind="ML_BAD_MIDDLE", item_ids=ids, now=now,
                           settings=capped, confidences={i: 0.6 + 0.01 * k
                                                         for k, i in enumerate(ids)})
            state = rebalance(session=s, settings=capped, now=now)
            mods = _states(s, "ML_BAD_MIDDLE")
        assert state.moved_now == 3
        assert [i for i in ids if mods[i] == "overflow"] == ids[6:9]
        with session_scope() as s:  # the budget is spoken for: nothing more moves
            again = rebalance(session=s, settings=capped, now=now)
        assert again.moved_now == 0 and "daily budget" in again.skipped
    finally:
        get_crowd_settings.cache_clear()


def test_the_periodic_job_rebalances_and_is_recorded(capped, policy):
    """With a capacity set, the in-process worker runs ``moderator_overflow`` on its cron;
    the run and what it moved are in ``job_runs`` (``quorum jobs``, ``/admin/jobs``)."""
    from backend.jobs.inline import InlineWorker
    from backend.jobs.models import JobRun

    now = utcnow()
    with session_scope() as s:
        ids = _items(s, policy, 8)
        queues.enqueue(session=s, kind="ML_BAD_MIDDLE", item_ids=ids, now=now,
                       settings=capped, confidences={i: 0.6 for i in ids})
    w = InlineWorker()
    assert "moderator_overflow" in w.due
    w.due = dict.fromkeys(w.due, now)
    assert "moderator_overflow" in w.run_due()
    with session_scope() as s:
        run = s.scalar(select(JobRun).where(JobRun.name == "moderator_overflow"))
        assert run.outcome == "ok" and run.detail["moved_now"] == 2
        assert run.detail["room"] == 6 and run.detail["capacity"] == 6
