"""Over real HTTP, against several uvicorn processes on PostgreSQL: a 2xx means committed,
and 32 moderators working side by side (with leases running out under them, verdicts sent
twice at once, and servers killed with SIGKILL and restarted) finish every task exactly
once, lose no answered verdict and never fork an item's decision chain.

Three single-process uvicorn servers on free loopback ports share one fresh database; the
clients (asyncio, one httpx client per moderator) spread over them and, when their server
is gone, move on to the next one, as behind a load balancer. A fixed seed drives the
clients' choices (think times, labels, double submits) and the chaos (which leases run
out, which servers die).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from tests.conftest import BACKENDS, item_row

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261201
SERVERS = 3
MODERATORS = 32
ITEMS_PER_PHASE = 100  # each queued twice (two kinds, interleaved): 200 tasks a phase
KINDS = ("STRESS_A", "STRESS_B")
LABELS = ("ok", "restricted", "adult", "prohibited", "fraud")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One uvicorn process (``backend.asgi:app``) on a fixed loopback port."""

    def __init__(self, url: str, log: Path) -> None:
        self.url, self.log = url, log
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, QUORUM_DATABASE_URL=self.url, QUORUM_ML_ENABLED="false",
                   QUORUM_SECRET_KEY="concurrency-test-" + "k" * 48,
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "backend.asgi:app", "--host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "warning", "--no-access-log"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def wait_ready(self, deadline: float) -> None:
        import httpx

        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"uvicorn exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("uvicorn did not answer in time")


@dataclass
class Stack:
    url: str
    servers: list[Server]
    admin: str
    tokens: list[str]
    user_ids: list[int]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if "postgres" not in BACKENDS:
        pytest.skip("PostgreSQL is not among QUORUM_TEST_BACKENDS")
    from backend.db import dispose_engines, session_scope
    from backend.migrate import upgrade
    from backend.users.service import create_user, issue_token
    from tests.pg import create_database, drop_database, server_url

    server = server_url()
    url = create_database(server, prefix="quorum_http")
    logs = tmp_path_factory.mktemp("uvicorn")
    servers = [Server(url, logs / f"server{k}.log") for k in range(SERVERS)]
    try:
        upgrade(url)
        with session_scope(url) as s:
            admin = issue_token(session=s, user=create_user(
                session=s, username="root", role="admin", queue_kinds=[]))
            mods = [create_user(session=s, username=f"m{k:02d}", role="moderator",
                                queue_kinds=[*KINDS, "MANUAL"]) for k in range(MODERATORS)]
            tokens = [issue_token(session=s, user=u) for u in mods]
            user_ids = [u.id for u in mods]
        for srv in servers:
            srv.start()
        deadline = time.monotonic() + 120
        for srv in servers:
            srv.wait_ready(deadline)
        yield Stack(url, servers, admin, tokens, user_ids)
    finally:
        for srv in servers:
            srv.kill9()
        dispose_engines()
        drop_database(server, url)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- a 2xx means committed -----------------------------------------------------------------

def test_a_read_right_after_a_2xx_sees_the_write(stack: Stack) -> None:
    """300 writes, each read back at once through another server process: a created user's
    token works, an ingested item is there, a verdict is the item's status. Before the
    fix the commit ran after the response went out, and some reads missed the write."""
    import httpx

    bases = [s.base for s in stack.servers]
    misses: list[str] = []
    with httpx.Client(timeout=30) as writer, httpx.Client(timeout=30) as reader:
        for i in range(300):
            w, r = bases[i % len(bases)], bases[(i + 1) % len(bases)]
            step = i % 3
            if step == 0:
                res = writer.post(f"{w}/api/v1/users", headers=_auth(stack.admin), json={
                    "username": f"raw{i}", "role": "moderator", "queue_kinds": ["MANUAL"]})
                assert res.status_code == 201, res.text
                me = reader.get(f"{r}/api/v1/users/me", headers=_auth(res.json()["token"]))
                if me.status_code != 200:
                    misses.append(f"user raw{i}: {me.status_code}")
            elif step == 1:
                res = writer.post(f"{w}/api/v1/items", headers=_auth(stack.admin),
                                  json=[item_row(10_000 + i, is_new=False)])
                assert res.status_code == 200, res.text
                [item_id] = res.json()["item_ids"]
                got = reader.get(f"{r}/api/v1/items/{item_id}", headers=_auth(stack.admin))
                if got.status_code != 200:
                    misses.append(f"item {item_id}: {got.status_code}")
            else:
                mod = _auth(stack.tokens[i % MODERATORS])  # the item of the step before
                lease = writer.post(f"{w}/api/v1/tasks/lease", headers=mod,
                                    json={})
                assert lease.status_code == 200, lease.text
                task = lease.json()["task"]
                if task is None:
                    misses.append(f"lease after the ingest of step {i - 1}: no task")
                    continue
                label = LABELS[i % len(LABELS)]
                v = writer.post(f"{w}/api/v1/tasks/{task['id']}/verdict", headers=mod,
                                json={"label": label})
                assert v.status_code == 200, v.text
                got = reader.get(f"{r}/api/v1/items/{task['item_id']}",
                                 headers=_auth(stack.admin)).json()
                if (got["status"] or {}).get("event_id") != v.json()["event_id"]:
                    misses.append(f"verdict on task {task['id']}: status {got['status']}")
    assert not misses, f"{len(misses)} of 300 reads missed the write just answered: {misses[:5]}"


# --- 32 moderators, leases running out, double submits, SIGKILL ----------------------------

@dataclass
class Tally:
    ok: list[dict[str, Any]] = field(default_factory=list)  # every 200 verdict answer
    conflicts: int = 0
    replays: int = 0
    retries: int = 0
    errors: list[str] = field(default_factory=list)
    expired: int = 0
    kills: int = 0


def _enqueue_phase(url: str, phase: int) -> list[int]:
    """``ITEMS_PER_PHASE`` new items, each queued in both kinds (same priority: their two
    tasks are offered one after the other, so two moderators decide an item at once)."""
    from backend.db import session_scope, utcnow
    from backend.items.service import ingest
    from backend.policy import get_policy
    from backend.queues.service import enqueue
    from backend.settings import get_settings

    settings = get_settings()
    rows = [item_row(phase * 1000 + i, external_id=f"P{phase}-{i}", is_new=False)
            for i in range(ITEMS_PER_PHASE)]
    with session_scope(url) as s:
        _, ids = ingest(session=s, rows=rows, policy=get_policy())
        now = utcnow()
        for item_id in ids:
            for kind in KINDS:
                enqueue(session=s, kind=kind, item_ids=[item_id], now=now, settings=settings,
                        priority=95)
    return ids


async def _moderator(k: int, token: str, bases: list[str], tally: Tally,
                     deadline: float, phase: int) -> None:
    import httpx

    rng = random.Random(SEED * 1000 + phase * 100 + k)
    at = [k % len(bases)]

    async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]
                   ) -> httpx.Response:
        while True:  # a dead server: try the next one, as a load balancer would
            if time.monotonic() > deadline:
                raise TimeoutError(f"moderator {k} still retrying {path}")
            try:
                return await client.post(bases[at[0]] + path, json=body)
            except httpx.TransportError:
                tally.retries += 1
                at[0] = (at[0] + 1) % len(bases)
                await asyncio.sleep(0.1)

    async def verdict(client: httpx.AsyncClient, task: dict[str, Any], label: str) -> None:
        r = await post(client, f"/api/v1/tasks/{task['id']}/verdict", {"label": label})
        if r.status_code == 200:
            body = r.json()
            tally.ok.append({**body, "task_id": task["id"]})
            tally.replays += bool(body["replayed"])
        elif r.status_code == 409:
            tally.conflicts += 1
        else:
            tally.errors.append(f"verdict {r.status_code} {r.text[:200]}")

    limits = httpx.Limits(max_connections=4)
    async with httpx.AsyncClient(timeout=60, headers=_auth(token), limits=limits) as one, \
            httpx.AsyncClient(timeout=60, headers=_auth(token), limits=limits) as two:
        while True:
            r = await post(one, "/api/v1/tasks/lease", {})
            if r.status_code != 200:
                tally.errors.append(f"lease {r.status_code} {r.text[:200]}")
                return
            task = r.json()["task"]
            if task is None:
                return
            await asyncio.sleep(rng.expovariate(1 / 0.03))  # looking at the card
            label = rng.choice(LABELS)
            roll = rng.random()
            if roll < 0.2:  # a double click: the same verdict twice at once
                await asyncio.gather(verdict(one, task, label), verdict(two, task, label))
            elif roll < 0.35:  # two tabs: two different verdicts at once
                other = rng.choice([x for x in LABELS if x != label])
                await asyncio.gather(verdict(one, task, label), verdict(two, task, other))
            else:
                await verdict(one, task, label)


async def _chaos(url: str, tally: Tally, rng: random.Random, stop: asyncio.Event) -> None:
    """Make a few live leases run out (as if their moderator had looked away): the next
    lease call returns them to the queue and another moderator may take them."""
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    async with await psycopg.AsyncConnection.connect(plain, autocommit=True) as conn:
        while not stop.is_set():
            cur = await conn.execute("SELECT id FROM tasks WHERE state = 'leased' ORDER BY id")
            leased = [row[0] for row in await cur.fetchall()]
            if leased:
                pick = rng.sample(leased, min(2, len(leased)))
                cur = await conn.execute(
                    "UPDATE tasks SET lease_expires_at = now() - interval '1 second' "
                    "WHERE state = 'leased' AND id = ANY(%s)", [pick])
                tally.expired += cur.rowcount
            await asyncio.sleep(0.1)


async def _killer(stack: Stack, tally: Tally, rng: random.Random, total: int,
                  stop: asyncio.Event) -> None:
    """SIGKILL one server at a quarter of the work, another at half, all of them at three
    quarters; each is restarted at once (and rejoins when it answers)."""
    plan = [(0.25, [rng.randrange(SERVERS)]), (0.5, [rng.randrange(SERVERS)]),
            (0.75, list(range(SERVERS)))]
    for share, victims in plan:
        while len({v["task_id"] for v in tally.ok}) < share * total:
            if stop.is_set():
                return
            await asyncio.sleep(0.05)
        for v in victims:
            stack.servers[v].kill9()
            stack.servers[v].start()
        tally.kills += 1


async def _run_phase(stack: Stack, total: int, *, kill: bool, budget_s: float) -> Tally:
    tally = Tally()
    rng = random.Random(SEED + kill)
    bases = [s.base for s in stack.servers]
    deadline = time.monotonic() + budget_s
    stop = asyncio.Event()
    side = [asyncio.create_task(_chaos(stack.url, tally, rng, stop))]
    if kill:
        side.append(asyncio.create_task(_killer(stack, tally, rng, total, stop)))
    try:
        await asyncio.gather(*[_moderator(k, t, bases, tally, deadline, 1 + kill)
                               for k, t in enumerate(stack.tokens)])
    finally:
        stop.set()
        await asyncio.gather(*side)
    return tally


def _check_database(stack: Stack, item_ids: list[int], tally: Tally) -> None:
    from backend.db import session_scope
    from backend.queues.models import Queue, Task
    from tests.backend.test_verdict_atomic import assert_one_chain

    assert not tally.errors, tally.errors[:5]
    with session_scope(stack.url) as s:
        tasks = dict(s.execute(select(Task.id, Task.state).join(Queue, Queue.id == Task.queue_id)
                               .where(Task.item_id.in_(item_ids))).tuples().all())
        assert len(tasks) == 2 * len(item_ids)
        assert Counter(tasks.values()) == {"done": len(tasks)}, "every task done"
        per_task = {row[0]: (row[1], row[2]) for row in s.execute(text(
            "SELECT t.id, (SELECT count(*) FROM judgments j WHERE j.task_id = t.id), "
            "(SELECT count(*) FROM decision_events e WHERE e.task_id = t.id AND e.is_human) "
            "FROM tasks t WHERE t.id = ANY(:ids)"), {"ids": list(tasks)})}
        twice = {t: n for t, n in per_task.items() if n != (1, 1)}
        assert not twice, f"tasks without exactly one judgment and one event: {twice}"
        # every verdict that got a 200 is in the database, as answered
        answers: dict[int, set[tuple[str, int, int]]] = defaultdict(set)
        for v in tally.ok:
            answers[v["task_id"]].add((v["label"], v["judgment_id"], v["event_id"]))
        split = {t: a for t, a in answers.items() if len(a) > 1}
        assert not split, f"two different 200 answers for one task: {split}"
        stored = {(j, t, lab) for j, t, lab in s.execute(text(
            "SELECT id, task_id, label FROM judgments WHERE task_id = ANY(:ids)"),
            {"ids": list(tasks)})}
        events = {(e, t, lab) for e, t, lab in s.execute(text(
            "SELECT id, task_id, label FROM decision_events WHERE task_id = ANY(:ids)"),
            {"ids": list(tasks)})}
        for t, [(label, judgment_id, event_id)] in answers.items():
            assert (judgment_id, t, label) in stored, f"judgment {judgment_id} lost"
            assert (event_id, t, label) in events, f"decision event {event_id} lost"
        assert set(answers) == set(tasks), "every task was answered with a 200 once"
        # one chain per item: rule-free items, two human decisions each, in order
        for item_id in item_ids:
            assert len(assert_one_chain(s, item_id)) == 2
        heads = s.scalar(select(func.count()).select_from(text(
            "(SELECT supersedes_id FROM decision_events WHERE supersedes_id IS NOT NULL "
            "GROUP BY supersedes_id HAVING count(*) > 1) AS forks")))
        assert heads == 0


@pytest.mark.parametrize("kill", [False, True], ids=["steady", "kill-9"])
def test_moderators_finish_every_task_once(stack: Stack, kill: bool) -> None:
    t0 = time.monotonic()
    item_ids = _enqueue_phase(stack.url, 2 if kill else 1)
    tally = asyncio.run(_run_phase(stack, 2 * len(item_ids), kill=kill, budget_s=150))
    if kill:
        assert tally.kills == 3 and tally.retries > 0  # the servers did die under load
        deadline = time.monotonic() + 120
        for srv in stack.servers:  # back for the next test
            srv.wait_ready(deadline)
    _check_database(stack, item_ids, tally)
    # the adversity happened: runs that saw none of it would prove nothing
    assert tally.expired > 0 and tally.conflicts > 0 and tally.replays > 0, tally
    print(f"\n{'kill -9' if kill else 'steady'}: {2 * len(item_ids)} tasks by {MODERATORS} "
          f"moderators on {SERVERS} servers in {time.monotonic() - t0:.1f}s; "
          f"{len(tally.ok)} verdicts answered 200 ({tally.replays} replays), "
          f"{tally.conflicts} refused 409, {tally.expired} leases run out, "
          f"{tally.retries} retries after a dead server")


# --- moderators' daily capacity: rebalances killed with SIGKILL while moderators work ------


def _rebalancer(env: dict[str, str], rng: random.Random, stop: threading.Event,
                runs: Counter[str]) -> None:
    """`quorum overflow` again and again (as the periodic job would run it), in a thread of
    its own; every other run is killed with SIGKILL at a random moment (the first after
    0.3 s; mid-import or mid-transaction; one that has finished by then counts as done),
    the others run to the end while the moderators lease."""
    n = 0
    while not stop.is_set():
        proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "overflow"], cwd=ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        n += 1
        if n % 2:  # the 1st, 3rd, ... run: SIGKILL at a random moment
            try:
                proc.wait(timeout=0.3 if n == 1 else rng.uniform(0.2, 1.5))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                runs["killed"] += 1
                continue
        err = proc.communicate()[1]
        runs["ok" if proc.returncode == 0 else f"rc {proc.returncode}"] += 1
        if proc.returncode != 0:
            runs["stderr: " + err.decode()[-200:]] += 1
        time.sleep(0.05)


def test_capacity_overflow_under_load_and_kill_9(stack: Stack) -> None:
    """32 moderators over HTTP work two queues while `quorum overflow` processes move what
    is over the day's capacity to the crowd, half of them killed with SIGKILL, and a second
    batch arrives mid-way. Every task ends answered once (a 200, one judgment, one event)
    or moved (no answer at all), never both; every item with a moved task has exactly one
    crowd task."""
    from backend.db import session_scope
    from backend.queues.models import Queue, Task

    with session_scope(stack.url) as s:  # the module's earlier phases count as today's work
        done_before = s.scalar(select(func.count()).select_from(Task)
                               .where(Task.state == "done"))
    env = dict(os.environ, QUORUM_DATABASE_URL=stack.url, QUORUM_ML_ENABLED="false",
               QUORUM_MODERATOR_DAILY_CAPACITY=str(done_before + 120),
               QUORUM_MODERATOR_OVERFLOW_FROM='["STRESS_A", "STRESS_B"]',
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    item_ids = _enqueue_phase(stack.url, 3)
    # the day is already over capacity when the moderators start: one rebalance first
    first = subprocess.run([sys.executable, "-m", "backend.cli", "overflow"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0 and "(80 just now)" in first.stdout, first.stderr
    runs: Counter[str] = Counter()

    async def phase() -> Tally:
        tally = Tally()
        rng = random.Random(SEED + 3)
        bases = [s.base for s in stack.servers]
        deadline = time.monotonic() + 150
        stop = asyncio.Event()

        async def second_batch() -> None:  # arrives while the moderators work
            await asyncio.sleep(0.5)
            item_ids.extend(await asyncio.to_thread(_enqueue_phase, stack.url, 4))

        side = [asyncio.create_task(_chaos(stack.url, tally, rng, stop))]
        halt = threading.Event()
        mover = threading.Thread(target=_rebalancer, args=(env, random.Random(SEED + 4),
                                                           halt, runs))
        mover.start()
        try:
            await asyncio.gather(second_batch(), *[
                _moderator(k, t, bases, tally, deadline, 3)
                for k, t in enumerate(stack.tokens)])
        finally:
            stop.set()
            await asyncio.gather(*side)
            halt.set()
            await asyncio.to_thread(mover.join)
        return tally

    tally = asyncio.run(phase())
    last = subprocess.run([sys.executable, "-m", "backend.cli", "overflow"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert last.returncode == 0, last.stderr  # whatever arrived after the moderators left
    assert not tally.errors, tally.errors[:5]
    assert not [r for r in runs if r.startswith(("rc", "stderr"))], runs
    with session_scope(stack.url) as s:
        tasks = {row[0]: (row[1], row[2]) for row in s.execute(
            select(Task.id, Task.state, Task.item_id).join(Queue, Queue.id == Task.queue_id)
            .where(Task.item_id.in_(item_ids), Queue.kind.in_(KINDS)))}
        answered = {row[0]: (row[1], row[2]) for row in s.execute(text(
            "SELECT t.id, (SELECT count(*) FROM judgments j WHERE j.task_id = t.id), "
            "(SELECT count(*) FROM decision_events e WHERE e.task_id = t.id AND e.is_human) "
            "FROM tasks t WHERE t.id = ANY(:ids)"), {"ids": list(tasks)})}
        crowd = Counter(s.scalars(select(Task.item_id).join(Queue, Queue.id == Task.queue_id)
                                  .where(Queue.kind == "OVERFLOW",
                                         Task.item_id.in_(item_ids))))
    assert len(tasks) == 2 * len(item_ids) == 400
    states = Counter(state for state, _ in tasks.values())
    assert set(states) <= {"done", "overflow"} and states["overflow"] >= 80, states
    ok_tasks = {v["task_id"] for v in tally.ok}
    for task_id, (state, _) in tasks.items():
        if state == "done":
            assert answered[task_id] == (1, 1) and task_id in ok_tasks, task_id
        else:  # moved: nobody's verdict on it was accepted
            assert answered[task_id] == (0, 0) and task_id not in ok_tasks, task_id
    moved_items = {item for state, item in tasks.values() if state == "overflow"}
    assert set(crowd) == moved_items and set(crowd.values()) == {1}
    assert runs["killed"] > 0, runs
    print(f"\ncapacity: {len(tasks)} tasks, {states['done']} answered by moderators, "
          f"{states['overflow']} moved to the crowd ({len(moved_items)} items); "
          f"`quorum overflow` runs during the work: {dict(runs)}")
