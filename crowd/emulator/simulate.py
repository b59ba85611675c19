"""How simulated workers answer open pools (deterministic under a seed).

A call to `Simulator.work` runs a small discrete-event simulation: every eligible
worker has a ``free_at`` time; the worker who is free first takes the next task
suite, spends ``seconds_per_task`` on each task, and is free again afterwards.
A suite is mixed like Toloka's mixer: up to ``mixer_config.real_tasks_count``
real tasks that still have remaining overlap and that this worker has not seen
(in task-creation order), plus up to ``golden_tasks_count`` control tasks the
worker has not seen. Workers under a user restriction, or who failed the pool's
training (``quality_control.training_requirement``), take nothing.

When no eligible worker can take another suite (and no suite is still ACTIVE), the
pool closes itself (``last_close_reason="COMPLETED"``), which is how a client learns
the crowd is done.

With `crowd.emulator.realism.Realism` switched on, a taken suite may be SKIPPED, stay
ACTIVE until the next work call, or lapse (EXPIRED) at the next work call; the tasks
of a skipped or expired suite are served again. Each work call first finishes pending
operations and resolves the ACTIVE suites of every pool (open or not).
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
from collections.abc import Mapping

from crowd.emulator.quality import QualityControl
from crowd.emulator.realism import Realism
from crowd.emulator.state import TolokaState, iso
from crowd.emulator.workers import ReplayBook, SimWorker, hidden_truth, simulate_answer
from crowd.pairs import PAIR_ANSWERS, pair_truth, split_pair_key


class Simulator:
    def __init__(
        self,
        state: TolokaState,
        *,
        workers: list[SimWorker],
        seed: int,
        truth: Mapping[str, str] | None = None,
        replay: ReplayBook | None = None,
        key_field: str = "item_id",
        realism: Realism | None = None,
    ) -> None:
        self.state, self.seed, self.truth = state, seed, dict(truth or {})
        self.realism = realism or Realism()
        self.quality = QualityControl(state)
        #: ACTIVE assignments: id -> (solutions, when submitted, "submit" | "expire")
        self.active: dict[str, tuple[list[dict], dt.datetime, str]] = {}
        self.replay, self.key_field = replay, key_field
        self.workers = list(replay.workers) if replay is not None else list(workers)
        self.free_at: dict[str, dt.datetime] = {w.id: state.now for w in self.workers}
        self._cursor: dict[tuple[str, str], tuple[int, int]] = {}  # (pool, worker) -> (gen, index)
        self._training: dict[tuple[str, str], bool] = {}
        self._replay_tasks: dict[str, tuple[int, dict[str, str]]] = {}  # pool -> key -> task id
        self._replay_lists: dict[tuple[str, str], tuple[int, list[str]]] = {}
        #: Tasks each worker was issued, per (scope, pool or project id, worker): what a
        #: ``golden_task_distribution_function`` counts.
        self.completed: dict[tuple[str, str, str], int] = {}

    # -- what a worker would say ---------------------------------------------
    def _labels(self, pool: dict) -> tuple[str, list[str]]:
        spec = self.state.projects[pool["project_id"]]["task_spec"]["output_spec"]
        for name, field in spec.items():
            if field.get("allowed_values"):
                return name, list(field["allowed_values"])
        raise ValueError("the emulator answers only output fields with allowed_values")

    def _answer(
        self, worker: SimWorker, task: dict, field: str, labels: list[str]
    ) -> tuple[str, float] | None:
        key = str(task["input_values"].get(self.key_field, task["id"]))
        if self.replay is not None:
            return self.replay.answer(worker, key)
        known = task.get("known_solutions") or []
        truth = known[0]["output_values"][field] if known else self.truth.get(key)
        truth = truth if truth is not None else self._pair_truth(key, labels)
        truth = truth if truth is not None else hidden_truth(key, labels)
        return simulate_answer(worker, seed=self.seed, task_id=key, truth=truth, labels=labels)

    def _pair_truth(self, key: str, labels: list[str]) -> str | None:
        """A pair task (key ``"<a>|<b>"``, answers yes/no) with no truth of its own: "yes"
        iff both items have a truth and it is the same label, "no" if they differ."""
        halves = split_pair_key(key)
        if halves is None or sorted(labels) != sorted(PAIR_ANSWERS):
            return None
        return pair_truth(self.truth.get(halves[0]), self.truth.get(halves[1]))

    def _passes_training(self, worker: SimWorker, pool: dict) -> bool:
        requirement = (pool.get("quality_control") or {}).get("training_requirement")
        if not requirement:
            return True
        tid = str(requirement["training_pool_id"])
        cache_key = (tid, worker.id)
        if cache_key not in self._training:
            training = self.state.pools.get(tid)
            field, labels = self._labels(pool)
            right = total = 0
            for task_id in self.state.pool_tasks.get(tid, []):
                task = self.state.tasks[task_id]
                got = self._answer(worker, task, field, labels)
                if got is None or not task.get("known_solutions"):
                    continue
                total += 1
                right += got[0] == task["known_solutions"][0]["output_values"][field]
            mark = float(requirement.get("training_passing_skill_value", 0))
            ok = training is not None and training["status"] == "OPEN"
            self._training[cache_key] = ok and total > 0 and 100.0 * right / total >= mark
        return self._training[cache_key]

    # -- suites --------------------------------------------------------------
    def _mix(self, pool: dict, worker: SimWorker) -> list[str]:
        st, pid = self.state, pool["id"]
        mixer = pool.get("mixer_config") or {}
        n_real = int(mixer.get("real_tasks_count", 1) or 1)
        n_gold = int(mixer.get("golden_tasks_count", 0) or 0)
        real: list[str] = []
        if self.replay is not None:
            candidates = self._replay_candidates(pid, worker)
        else:
            candidates = [t for t in st.pool_tasks[pid] if not st.tasks[t].get("known_solutions")]
        gen, start = self._cursor.get((pid, worker.id), (-1, 0))
        if gen != st.overlap_generation:
            start = 0
        index = start
        for index in range(start, len(candidates)):
            tid = candidates[index]
            task = st.tasks[tid]
            if worker.id in st.answered_by[tid] or st.issued[tid] >= task["overlap"]:
                if index == start:
                    start += 1  # never answerable again until overlaps change
                continue
            real.append(tid)
            if len(real) == n_real:
                break
        self._cursor[(pid, worker.id)] = (st.overlap_generation, start)
        if not real:
            return []
        golden = [
            t
            for t in st.pool_tasks[pid]
            if st.tasks[t].get("known_solutions") and worker.id not in st.answered_by[t]
        ]
        if self.replay is not None:
            labels = self.replay.labels
            golden = [t for t in golden if (worker.id, self._key(t)) in labels]
        fn = mixer.get("golden_task_distribution_function")
        if fn and n_gold:
            n_gold = min(n_gold, self._scheduled(pool, worker, fn, len(real)))
        return real + golden[:n_gold]

    def _scheduled(self, pool: dict, worker: SimWorker, fn: dict, n_real: int) -> int:
        """Control tasks a ``golden_task_distribution_function`` gives this suite: the
        worker's completed tasks in the scope so far are ``done``; the suite covers task
        positions ``done .. done + n_real - 1``; a position ``p`` in an interval
        (``from <= p <= to``) is a control position when ``(p - from) % frequency == 0``;
        outside every interval, none (UNIFORM; window_days is not modelled)."""
        scope = str(fn.get("scope", "POOL"))
        done = self.completed.get(self._scope_key(pool, worker, scope), 0)
        count = 0
        for p in range(done, done + max(n_real, 1)):
            for iv in fn.get("intervals") or []:
                lo, hi, freq = int(iv["from"]), int(iv["to"]), max(int(iv["frequency"]), 1)
                if lo <= p <= hi:
                    count += (p - lo) % freq == 0
                    break
        return count

    @staticmethod
    def _scope_key(pool: dict, worker: SimWorker, scope: str) -> tuple[str, str, str]:
        return ((scope, str(pool["project_id"]), worker.id) if scope == "PROJECT"
                else ("POOL", str(pool["id"]), worker.id))

    def _key(self, tid: str) -> str:
        return str(self.state.tasks[tid]["input_values"].get(self.key_field, tid))

    def _replay_candidates(self, pid: str, worker: SimWorker) -> list[str]:
        assert self.replay is not None
        n_tasks = len(self.state.pool_tasks[pid])
        built = self._replay_tasks.get(pid)
        if built is None or built[0] != n_tasks:
            fresh: dict[str, str] = {}
            for tid in self.state.pool_tasks[pid]:
                if not self.state.tasks[tid].get("known_solutions"):
                    fresh.setdefault(self._key(tid), tid)
            built = self._replay_tasks[pid] = (n_tasks, fresh)
        index = built[1]
        cached = self._replay_lists.get((pid, worker.id))
        if cached is None or cached[0] != n_tasks:
            keys = self.replay.by_worker.get(worker.id, ())
            cached = (n_tasks, [index[k] for k in keys if k in index])
            self._replay_lists[(pid, worker.id)] = cached
        return cached[1]

    def _issue(
        self, pool: dict, worker: SimWorker, task_ids: list[str], start: dt.datetime
    ) -> dt.datetime:
        st = self.state
        field, labels = self._labels(pool)
        solutions, tasks, spent = [], [], 0.0
        for tid in task_ids:
            label, seconds = self._answer(worker, st.tasks[tid], field, labels) or (labels[0], 1.0)
            solutions.append({"output_values": {field: label}})
            tasks.append(st.task_view(tid))
            spent += seconds
            st.answered_by[tid].add(worker.id)
            if not st.tasks[tid]["infinite_overlap"]:
                st.issued[tid] += 1
        for scope in ("POOL", "PROJECT"):
            key = self._scope_key(pool, worker, scope)
            self.completed[key] = self.completed.get(key, 0) + len(task_ids)
        submitted = start + dt.timedelta(seconds=spent)
        aid = st.next_id("assignment")
        fate = self._fate(aid)
        record = {
            "id": aid,
            "task_suite_id": st.next_id("suite"),
            "pool_id": pool["id"],
            "user_id": worker.id,
            "status": "ACTIVE",
            "reward": pool.get("reward_per_assignment", 0),
            "tasks": tasks,
            "automerged": False,
            "mixed": True,
            "created": iso(start),
            "owner": {"id": "requester", "myself": True},
        }
        st.assignments[aid] = record
        if fate == "skip":  # opened and skipped at once: the tasks go back to the pool
            skipped_at = start + dt.timedelta(seconds=min(spent, 5.0))
            record.update(status="SKIPPED", skipped=iso(skipped_at))
            self._give_back(record)
            st.now = max(st.now, skipped_at)
            if self.realism.quality_control:
                self.quality.on_skip(pool, worker.id)
            return skipped_at
        if fate == "submit":
            self._submit(record, solutions, submitted)
            return submitted
        self.active[aid] = (solutions, submitted, fate)
        if fate == "expire":  # busy until the suite lapses
            limit = float(pool.get("assignment_max_duration_seconds") or 600)
            return start + dt.timedelta(seconds=max(limit, spent))
        return submitted

    def _fate(self, aid: str) -> str:
        """``submit`` (at once), ``active`` (submitted at the next work call), ``expire``
        (lapses at the next work call) or ``skip``, drawn from ``(seed, assignment)``."""
        r = self.realism
        if not r.suite_fates:
            return "submit"
        u = random.Random(f"{self.seed}|{aid}|fate").random()
        if u < r.skipped:
            return "skip"
        if u < r.skipped + r.expired:
            return "expire"
        if u < r.skipped + r.expired + r.active:
            return "active"
        return "submit"

    def _submit(self, record: dict, solutions: list[dict], submitted: dt.datetime) -> None:
        st = self.state
        pool = st.pools[record["pool_id"]]
        record.update(status="SUBMITTED", solutions=solutions, submitted=iso(submitted))
        if pool.get("auto_accept_solutions"):
            record.update(status="ACCEPTED", accepted=iso(submitted))
        st.now = max(st.now, submitted)
        if self.realism.quality_control:
            field, _ = self._labels(pool)
            golden = [
                s["output_values"].get(field) == t["known_solutions"][0]["output_values"][field]
                for t, s in zip(record["tasks"], solutions, strict=True)
                if t.get("known_solutions")
            ]
            created = dt.datetime.fromisoformat(record["created"]).replace(tzinfo=dt.UTC)
            self.quality.on_submit(pool, record["user_id"], golden=golden,
                                   seconds=(submitted - created).total_seconds())

    def _give_back(self, record: dict) -> None:
        """A skipped or expired suite's tasks can be served again (not to that worker)."""
        st = self.state
        for task in record["tasks"]:
            if not st.tasks[task["id"]]["infinite_overlap"]:
                st.issued[task["id"]] = max(st.issued[task["id"]] - 1, 0)
        st.overlap_generation += 1

    def resolve_active(self) -> int:
        """Time passes: ACTIVE suites are submitted, or lapse (EXPIRED). Returns how many."""
        st = self.state
        n = len(self.active)
        for aid in sorted(self.active):
            solutions, submitted, fate = self.active.pop(aid)
            record = st.assignments[aid]
            if fate == "expire":
                pool = st.pools[record["pool_id"]]
                limit = float(pool.get("assignment_max_duration_seconds") or 600)
                created = dt.datetime.fromisoformat(record["created"]).replace(tzinfo=dt.UTC)
                lapsed = created + dt.timedelta(seconds=limit)
                record.update(status="EXPIRED", expired=iso(lapsed))
                st.now = max(st.now, lapsed)
                self._give_back(record)
            else:
                self._submit(record, solutions, submitted)
        return n

    def has_active(self, pool_id: str) -> bool:
        return any(self.state.assignments[a]["pool_id"] == pool_id for a in self.active)

    def work(self, pool_id: str | None = None, *, n: int | None = None) -> int:
        """Answer up to ``n`` suites (all that can be answered when ``None``) in the
        open pool ``pool_id`` (every open regular pool when ``None``). Returns how many."""
        st = self.state
        st.finish_operations()
        self.resolve_active()
        pool_ids = (
            [pool_id]
            if pool_id
            else sorted(
                p
                for p, pool in st.pools.items()
                if pool["status"] == "OPEN" and pool["type"] == "REGULAR"
            )
        )
        done = 0
        for pid in pool_ids:
            pool = st.pools.get(pid)
            if pool is None or pool["status"] != "OPEN":
                continue
            opened = dt.datetime.fromisoformat(pool["last_started"]).replace(tzinfo=dt.UTC)
            heap = [
                (max(self.free_at[w.id], opened), i, w)
                for i, w in enumerate(self.workers)
                if not st.is_restricted(w.id, pool) and self._passes_training(w, pool)
            ]
            heapq.heapify(heap)
            while heap and (n is None or done < n):
                free_at, i, worker = heapq.heappop(heap)
                if st.is_restricted(worker.id, pool):
                    continue
                task_ids = self._mix(pool, worker)
                if not task_ids:
                    continue
                self.free_at[worker.id] = self._issue(pool, worker, task_ids, free_at)
                heapq.heappush(heap, (self.free_at[worker.id], i, worker))
                done += 1
            if not heap and not self.has_active(pid):
                pool["status"], pool["last_close_reason"] = "CLOSED", "COMPLETED"
                pool["last_stopped"] = iso(st.now)
        return done
