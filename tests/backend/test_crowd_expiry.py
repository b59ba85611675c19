"""The way back for crowd leases (issue #10 item 4): a pool whose local emulator is gone,
or open past its deadline, gives its tasks back; a re-run reaches them; a Toloka that
hands out ids Quorum already recorded is refused with a sentence, not a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
import warnings
from datetime import timedelta

import pytest
from sqlalchemy import func, select

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from backend.crowdwork.common import emulator_id_base  # noqa: E402
from backend.crowdwork.expiry import expire_stale_pools  # noqa: E402
from backend.crowdwork.models import CrowdPool, CrowdTask  # noqa: E402
from backend.crowdwork.runtime import open_crowd, work_rounds  # noqa: E402
from backend.crowdwork.service import pull_pool, push_queue  # noqa: E402
from backend.crowdwork.settings import CrowdSettings  # noqa: E402
from backend.db import session_scope, utcnow  # noqa: E402
from backend.errors import Conflict  # noqa: E402
from backend.queues.models import Queue, Task  # noqa: E402
from crowd.emulator import Emulator, SimWorker  # noqa: E402
from tests.backend.test_crowd_support import crowd_runtime, seed_queue  # noqa: E402

CROWD = dict(overlap=2, min_answers=2, tasks_per_suite=4, emulator_workers=10, aggregation="mv",
             target_confidence=0.6)


def _states(queue: str) -> dict[str, int]:
    with session_scope() as s:
        return dict(s.execute(select(Task.state, func.count()).join(Queue)
                              .where(Queue.name == queue).group_by(Task.state)).tuples().all())


def test_offline_push_killed_mid_round_is_expired_and_pushed_again(settings, policy):
    queue, truth = seed_queue(settings, policy, n=10, n_golden=6)
    crowd = CrowdSettings(**CROWD)
    with open_crowd(settings=settings, crowd=crowd, policy=policy, truth=truth) as c:
        first = push_queue(rt=c.runtime, queue_name=queue)
        c.emulator.work(first.toloka_pool_id)
        pull_pool(rt=c.runtime, pool_id=first.pool_id)  # one round, then the command dies
    with session_scope() as s:
        assert s.get(CrowdPool, first.pool_id).state == "open"
    assert _states(queue).get("pending", 0) == 0  # the crowd holds them

    with open_crowd(settings=settings, crowd=crowd, policy=policy, truth=truth) as c:
        again = push_queue(rt=c.runtime, queue_name=queue)
        assert not again.already_open and again.expired == [first.pool_id]
        rounds = work_rounds(c, pool_id=again.pool_id, max_rounds=10)
    assert rounds[-1].state == "closed"
    with session_scope() as s:
        old = s.get(CrowdPool, first.pool_id)
        outcomes = dict(s.execute(
            select(CrowdTask.outcome, func.count())
            .where(CrowdTask.pool_id == old.id, CrowdTask.is_golden.is_(False))
            .group_by(CrowdTask.outcome)).tuples().all())
    assert old.state == "expired" and "emulator" in old.config["expired"]["reason"]
    # what round one decided stays decided; the rest was handed back and pushed again
    assert again.items == outcomes.get("expired", 0) == old.config["expired"]["returned"]
    assert again.items + outcomes.get("decided", 0) + outcomes.get("moderators", 0) == 10
    assert _states(queue) == {"done": 10}


def test_expiry_probes_the_emulator_and_honours_the_deadline(settings, policy):
    queue, truth = seed_queue(settings, policy, n=8, n_golden=6)
    crowd = CrowdSettings(**CROWD)
    workers = [SimWorker(f"w{i}", accuracy=0.95) for i in range(6)]
    with Emulator(seed=1, workers=workers, truth=truth) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url)
        rt.toloka_url, rt.local_emulator = emu.url, True
        pushed = push_queue(rt=rt, queue_name=queue)
        other = crowd_runtime(settings, crowd, policy, "http://127.0.0.1:9")
        assert expire_stale_pools(rt=other) == []  # its emulator still answers for it
        later = utcnow() + timedelta(days=crowd.crowd_config().pool_lifetime_days, hours=1)
        expired = expire_stale_pools(rt=rt, now=later)  # past its deadline
    assert [e.pool_id for e in expired] == [pushed.pool_id] and expired[0].returned == 8
    assert "deadline" in expired[0].reason
    assert _states(queue) == {"pending": 8}
    assert pull_pool(rt=rt, pool_id=pushed.pool_id).state == "expired"  # no more rounds


def test_a_restarted_standalone_emulator_is_refused_then_resumed(settings, policy):
    first_queue, truth = seed_queue(settings, policy, n=6, n_golden=6)
    second_queue, truth2 = seed_queue(settings, policy, n=6, n_golden=0, kind="ML_GOOD",
                                      start=100)
    crowd = CrowdSettings(**CROWD)
    with Emulator(seed=1, truth=truth) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url)
        first = push_queue(rt=rt, queue_name=first_queue)
    with Emulator(seed=1, truth=truth | truth2) as fresh:  # its ids start again at the same
        rt = crowd_runtime(settings, crowd, policy, fresh.url)
        rt.toloka_url = fresh.url
        with pytest.raises(Conflict, match="--id-base"):
            push_queue(rt=rt, queue_name=second_queue)
        with session_scope() as s:
            stuck = s.scalars(select(CrowdPool).where(CrowdPool.state == "intent")).one()
            base = emulator_id_base(session=s)
    with Emulator(seed=1, truth=truth | truth2, id_base=base) as fixed:
        rt = crowd_runtime(settings, crowd, policy, fixed.url)
        resumed = push_queue(rt=rt, queue_name=second_queue)
    assert resumed.resumed and resumed.pool_id == stuck.id
    assert resumed.toloka_pool_id != first.toloka_pool_id
    with session_scope() as s:
        assert s.get(CrowdPool, stuck.id).state == "open"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_says_what_went_wrong_with_toloka(settings, db_url, policy):
    if not db_url.startswith("sqlite"):
        pytest.skip("the CLI is exercised once; the services it calls run on both backends")
    first_queue, truth = seed_queue(settings, policy, n=4, n_golden=6)
    second_queue, _ = seed_queue(settings, policy, n=4, n_golden=0, kind="ML_GOOD",
                                 start=100)
    env = {"QUORUM_DATABASE_URL": settings.resolved_database_url,
           "QUORUM_DATA_DIR": str(settings.data_dir), "PATH": "/usr/bin:/bin",
           "HF_HUB_OFFLINE": "1", "QUORUM_ML_ENABLED": "false"}

    def quorum(*args: str, url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "backend.cli", "crowd", *args],
                              capture_output=True, text=True, timeout=180,
                              env={**env, "QUORUM_CROWD_TOLOKA_URL": url})

    with Emulator(seed=1, truth=truth) as emu:
        assert quorum("push", first_queue, url=emu.url).returncode == 0
    with Emulator(seed=1) as fresh:
        r = quorum("push", second_queue, url=fresh.url)
    assert r.returncode == 4 and "--id-base" in r.stderr and "Traceback" not in r.stderr
    r = quorum("pull", url=f"http://127.0.0.1:{_free_port()}")
    assert r.returncode == 6 and "does not answer" in r.stderr and "Traceback" not in r.stderr
    with session_scope() as s:
        stuck = s.scalars(select(CrowdPool).where(CrowdPool.state == "intent")).one()
    r = quorum("expire", "--pool", str(stuck.id), url=f"http://127.0.0.1:{_free_port()}")
    assert r.returncode == 0 and "4 tasks back to pending" in r.stdout, r.stderr
    assert _states(second_queue) == {"pending": 4}
