"""In-memory Toloka API v1 state: the subset of resources Quorum's calls touch.

Handlers take parsed JSON and query parameters and return ``(status, body)``;
errors are raised as `ApiFailure` and rendered by the server in Toloka's shape
``{"code", "message", "request_id", "payload"}``. All methods run under the
server's single lock.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Callable, Iterable
from typing import Any

EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
#: Pool (and training) ids are numbers from here on, as on Toloka.
POOL_ID_START = 1_000_000
_CMP = re.compile(r"^(\w+?)_(gt|gte|lt|lte)$")
_EQ_FIELDS = ("pool_id", "project_id", "user_id", "task_suite_id", "scope", "type")


class ApiFailure(Exception):
    def __init__(self, status: int, code: str, message: str, payload: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.payload = status, code, message, payload


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")


def not_found(what: str, ident: str) -> ApiFailure:
    return ApiFailure(404, "DOES_NOT_EXIST", f"{what} {ident} does not exist")


def search(items: Iterable[dict], params: dict[str, str]) -> dict:
    """Toloka list semantics: equality filters, ``<field>_gt/_gte/_lt/_lte``,
    ``sort`` (``id`` or ``-id``), ``limit`` (default 50) and ``has_more``."""
    rows = list(items)
    for name in _EQ_FIELDS:
        if name in params:
            rows = [r for r in rows if str(r.get(name)) == params[name]]
    if "status" in params:
        wanted = set(params["status"].split(","))
        rows = [r for r in rows if r.get("status") in wanted]
    if "task_id" in params:  # assignments containing a task
        rows = [r for r in rows if any(t["id"] == params["task_id"] for t in r.get("tasks", ()))]
    for key, value in params.items():
        m = _CMP.match(key)
        if not m:
            continue
        field, op = m.groups()
        rows = [r for r in rows if r.get(field) is not None and _cmp(r[field], op, value)]
    sort = params.get("sort", "id").split(",")[0]
    field = sort.lstrip("-")
    rows.sort(key=lambda r: (r.get(field) is None, r.get(field)), reverse=sort.startswith("-"))
    limit = int(params.get("limit", 50))
    return {"items": [copy.deepcopy(r) for r in rows[:limit]], "has_more": len(rows) > limit}


def _cmp(left: Any, op: str, right: str) -> bool:
    value: Any = int(right) if isinstance(left, int) and not isinstance(left, bool) else right
    return {
        "gt": left > value,
        "gte": left >= value,
        "lt": left < value,
        "lte": left <= value,
    }[op]


class TolokaState:
    """Projects, pools, trainings, tasks, assignments, operations, restrictions."""

    def __init__(self, *, id_base: int = 0, pending_polls: int = 0) -> None:
        self.now = EPOCH
        #: Operations are answered PENDING and take effect on the n-th poll (0: at once).
        self.pending_polls = pending_polls
        self.deferred: dict[str, list[Any]] = {}  # op id -> [polls left, effect]
        self.aggregated: dict[str, list[dict]] = {}  # aggregation op id -> solutions
        self.projects: dict[str, dict] = {}
        self.pools: dict[str, dict] = {}  # regular pools and trainings share the id space
        self.tasks: dict[str, dict] = {}
        self.pool_tasks: dict[str, list[str]] = {}
        self.issued: dict[str, int] = {}  # task id -> non-rejected answers
        self.answered_by: dict[str, set[str]] = {}
        self.assignments: dict[str, dict] = {}
        self.operations: dict[str, dict] = {}
        self.op_logs: dict[str, list[dict]] = {}
        self.restrictions: dict[str, dict] = {}
        self.overlap_generation = 0  # bumped when tasks become answerable again
        # ids continue after ``id_base``: a later emulator run need not reuse an id an
        # earlier one handed out (a caller keeping both runs' ids apart sets it)
        self._n = {
            "project": id_base,
            "pool": POOL_ID_START + id_base,
            "task": id_base,
            "assignment": id_base,
            "suite": id_base,
            "op": id_base,
            "restriction": id_base,
        }

    def next_id(self, kind: str) -> str:
        self._n[kind] += 1
        n = self._n[kind]
        return {
            "project": str(n),
            "pool": str(n),
            "task": f"{n:016x}",
            "assignment": f"{n:016x}",
            "suite": f"{n:016x}",
            "op": f"00000000-0000-4000-8000-{n:012x}",
            "restriction": str(n),
        }.get(kind, str(n))

    # -- projects ----------------------------------------------------------
    def create_project(self, body: dict) -> tuple[int, dict]:
        spec = body.get("task_spec") or {}
        if not body.get("public_name") or not spec.get("input_spec") or not spec.get("output_spec"):
            raise ApiFailure(
                400,
                "VALIDATION_ERROR",
                "Validation failed",
                {
                    "task_spec": {
                        "code": "REQUIRED",
                        "message": "public_name and task_spec required",
                    }
                },
            )
        pid = self.next_id("project")
        self.projects[pid] = {**body, "id": pid, "status": "ACTIVE", "created": iso(self.now)}
        return 201, copy.deepcopy(self.projects[pid])

    def get(self, table: dict[str, dict], what: str, ident: str) -> dict:
        if ident not in table:
            raise not_found(what, ident)
        return table[ident]

    # -- pools and trainings -----------------------------------------------
    def create_pool(self, body: dict, *, training: bool = False) -> tuple[int, dict]:
        self.get(self.projects, "project", str(body.get("project_id")))
        errors = {}
        if not training:
            if float(body.get("reward_per_assignment") or 0) < 0.005:
                errors["reward_per_assignment"] = {
                    "code": "VALUE_LESS_THAN_MIN",
                    "message": ">= 0.005",
                }
            if not body.get("mixer_config") and not body.get("dynamic_mixer_config"):
                errors["mixer_config"] = {"code": "REQUIRED", "message": "mixer_config is required"}
        if errors:
            raise ApiFailure(400, "VALIDATION_ERROR", "Validation failed", errors)
        pid = self.next_id("pool")
        self.pools[pid] = {
            **body,
            "id": pid,
            "project_id": str(body["project_id"]),
            "status": "CLOSED",
            "created": iso(self.now),
            "type": "TRAINING" if training else "REGULAR",
            "last_close_reason": "NOT_STARTED",
            "owner": {"id": "requester", "myself": True},
        }
        self.pool_tasks[pid] = []
        return 201, copy.deepcopy(self.pools[pid])

    def set_pool_status(self, pool_id: str, *, open_: bool, kind: str) -> tuple[int, dict | None]:
        pool = self.get(self.pools, kind.lower(), pool_id)
        target = "OPEN" if open_ else "CLOSED"
        if pool["status"] == target:
            return 204, None
        if open_ and not self.pool_tasks[pool_id]:
            raise ApiFailure(409, "CONFLICT_STATE", "pool has no tasks")
        op_type = f"{kind}.{'OPEN' if open_ else 'CLOSE'}"
        key = "training_id" if kind == "TRAINING" else "pool_id"
        return 202, self.operation(
            op_type, {key: pool_id}, effect=lambda: self.apply_pool_status(pool, open_=open_)
        )

    def apply_pool_status(self, pool: dict, *, open_: bool) -> None:
        pool["status"] = "OPEN" if open_ else "CLOSED"
        if open_:
            pool["last_started"] = iso(self.now)
        else:
            pool["last_stopped"], pool["last_close_reason"] = iso(self.now), "MANUAL"

    def operation(
        self,
        op_type: str,
        parameters: dict,
        op_id: str | None = None,
        details: dict | None = None,
        effect: Callable[[], dict | None] | None = None,
    ) -> dict:
        """An operation: finished now (``pending_polls`` 0), or PENDING with ``effect``
        applied when it finishes (`poll_operation`, `finish_operations`). ``effect`` may
        return details to merge into the operation's."""
        oid = op_id or self.next_id("op")
        op = {
            "id": oid,
            "type": op_type,
            "status": "PENDING",
            "submitted": iso(self.now),
            "progress": 0,
            "parameters": parameters,
            "details": details or {},
        }
        self.operations[oid] = op
        if self.pending_polls and effect is not None:
            self.deferred[oid] = [self.pending_polls, effect]
        else:
            self._finish(op, effect)
        return copy.deepcopy(op)

    def _finish(self, op: dict, effect: Callable[[], dict | None] | None) -> None:
        extra = effect() if effect is not None else None
        op.update(status="SUCCESS", progress=100, finished=iso(self.now))
        op.setdefault("started", iso(self.now))
        op["details"] = {**op["details"], **(extra or {})}

    def poll_operation(self, oid: str) -> dict:
        """``GET /operations/{id}``: a pending operation runs, then finishes on its n-th poll."""
        op = self.get(self.operations, "operation", oid)
        pending = self.deferred.get(oid)
        if pending is not None:
            pending[0] -= 1
            if pending[0] <= 0:
                del self.deferred[oid]
                self._finish(op, pending[1])
            else:
                op.update(status="RUNNING", started=op.get("started") or iso(self.now),
                          progress=50)
        return copy.deepcopy(op)

    def finish_operations(self) -> None:
        """Time passes (a work call): every pending operation finishes, in creation order."""
        for oid in sorted(self.deferred):
            _, effect = self.deferred.pop(oid)
            self._finish(self.operations[oid], effect)

    # -- tasks ---------------------------------------------------------------
    def _validate_task(self, task: dict) -> dict | None:
        pool = self.pools.get(str(task.get("pool_id")))
        if pool is None:
            return {"pool_id": {"code": "DOES_NOT_EXIST", "message": "pool does not exist"}}
        spec = self.projects[pool["project_id"]]["task_spec"]
        values = task.get("input_values") or {}
        for name, field in spec["input_spec"].items():
            if field.get("required", True) and values.get(name) in (None, ""):
                return {f"input_values.{name}": {"code": "VALUE_REQUIRED", "message": "required"}}
        for solution in task.get("known_solutions") or []:
            for name, value in solution.get("output_values", {}).items():
                allowed = spec["output_spec"].get(name, {}).get("allowed_values")
                if allowed and value not in allowed:
                    return {
                        f"known_solutions.{name}": {"code": "VALUE_NOT_ALLOWED", "message": value}
                    }
        return None

    def _insert_task(self, task: dict, *, allow_defaults: bool) -> dict:
        pool = self.pools[str(task["pool_id"])]
        tid = self.next_id("task")
        golden = bool(task.get("known_solutions"))
        overlap = task.get("overlap")
        if overlap is None:
            defaults = pool.get("defaults") or {}
            overlap = defaults.get("default_overlap_for_new_tasks", 1) if allow_defaults else 1
        infinite = bool(task.get("infinite_overlap", False)) or (
            golden and task.get("overlap") is None
        )
        stored = {
            k: v for k, v in task.items() if not k.startswith("__") and k not in ("id", "created")
        }
        stored.update(
            id=tid,
            pool_id=str(task["pool_id"]),
            overlap=None if infinite else int(overlap),
            infinite_overlap=infinite,
            created=iso(self.now),
        )
        self.tasks[tid] = stored
        self.pool_tasks[stored["pool_id"]].append(tid)
        self.issued[tid] = 0
        self.answered_by[tid] = set()
        return stored

    def task_view(self, tid: str) -> dict:
        task = copy.deepcopy(self.tasks[tid])
        if task["infinite_overlap"]:
            task.pop("overlap", None)
        else:
            task["remaining_overlap"] = max(task["overlap"] - self.issued[tid], 0)
        return task

    def create_tasks(self, body: Any, params: dict[str, str]) -> tuple[int, dict]:
        flag = lambda name, default: params.get(name, default).lower() == "true"  # noqa: E731
        async_mode, allow_defaults = flag("async_mode", "true"), flag("allow_defaults", "false")
        open_pool, skip_invalid = flag("open_pool", "false"), flag("skip_invalid_items", "false")
        op_id = params.get("operation_id")
        if async_mode and op_id and op_id in self.operations:
            raise ApiFailure(409, "OPERATION_ALREADY_EXISTS", f"operation {op_id} already exists")
        objects = body if isinstance(body, list) else [body]
        errors = {str(i): e for i, obj in enumerate(objects) if (e := self._validate_task(obj))}
        created: dict[str, dict] = {}

        def insert() -> dict:
            if not errors or skip_invalid:
                for i, obj in enumerate(objects):
                    if str(i) not in errors:
                        created[str(i)] = self._insert_task(obj, allow_defaults=allow_defaults)
            if open_pool:
                for pid in sorted({t["pool_id"] for t in created.values()}):
                    if self.pools[pid]["status"] != "OPEN":
                        self.apply_pool_status(self.pools[pid], open_=True)
            return {"success_count": len(created)}

        if not async_mode:
            insert()
            if errors and not created:
                raise ApiFailure(400, "VALIDATION_ERROR", "Validation failed", errors)
            items = {i: self.task_view(t["id"]) for i, t in created.items()}
            return 201, {"items": items, "validation_errors": errors}
        oid = op_id or self.next_id("op")

        def insert_and_log() -> dict:
            details = insert()
            self.op_logs[oid] = [
                {
                    "type": "TASK_CREATE",
                    "success": True,
                    "input": objects[int(i)],
                    "output": {"task_id": t["id"]},
                }
                for i, t in created.items()
            ] + [
                {"type": "TASK_VALIDATE", "success": False, "input": objects[int(i)], "output": e}
                for i, e in errors.items()
            ]
            return details

        parameters = {
            "skip_invalid_items": skip_invalid,
            "allow_defaults": allow_defaults,
            "open_pool": open_pool,
        }
        op = self.operation(
            "TASK.BATCH_CREATE",
            parameters,
            op_id=oid,
            details={"items_count": len(objects)},
            effect=insert_and_log,
        )
        return 202, op

    def set_overlap(self, tid: str, body: dict, *, or_min: bool) -> tuple[int, dict]:
        task = self.get(self.tasks, "task", tid)
        if "overlap" in body and body["overlap"] is not None:
            wanted = int(body["overlap"])
            if wanted < self.issued[tid] and not or_min:
                raise ApiFailure(409, "CONFLICT_STATE", "overlap below answers already issued")
            if wanted > (task["overlap"] or 0):
                self.overlap_generation += 1
            task["overlap"] = max(wanted, self.issued[tid])
            task["infinite_overlap"] = False
        if body.get("infinite_overlap"):
            task["infinite_overlap"], task["overlap"] = True, None
        return 200, self.task_view(tid)

    # -- assignments -------------------------------------------------------
    def patch_assignment(self, aid: str, body: dict) -> tuple[int, dict]:
        assignment = self.get(self.assignments, "assignment", aid)
        target = body.get("status")
        if target not in ("ACCEPTED", "REJECTED"):
            raise ApiFailure(
                400,
                "VALIDATION_ERROR",
                "Validation failed",
                {"status": {"code": "VALUE_NOT_ALLOWED", "message": str(target)}},
            )
        if assignment["status"] == target:  # a retried PATCH is a no-op
            return 200, copy.deepcopy(assignment)
        if assignment["status"] != "SUBMITTED":
            raise ApiFailure(409, "CONFLICT_STATE", f"assignment is {assignment['status']}")
        if target == "REJECTED" and not body.get("public_comment"):
            raise ApiFailure(
                400,
                "VALIDATION_ERROR",
                "Validation failed",
                {"public_comment": {"code": "REQUIRED", "message": "required"}},
            )
        assignment["status"] = target
        assignment[target.lower()] = iso(self.now)
        assignment["public_comment"] = body.get("public_comment")
        if target == "REJECTED":  # Toloka re-issues the rejected tasks
            for task in assignment["tasks"]:
                self.issued[task["id"]] = max(self.issued[task["id"]] - 1, 0)
            self.overlap_generation += 1
        return 200, copy.deepcopy(assignment)

    # -- aggregation ---------------------------------------------------------
    def aggregate_by_pool(self, body: dict) -> tuple[int, dict]:
        """``POST /aggregated-solutions/aggregate-by-pool``: a majority vote per task over
        the pool's SUBMITTED/ACCEPTED answers (Toloka's ``DAWID_SKENE`` and
        ``WEIGHTED_DYNAMIC_OVERLAP`` are approximated by it; confidence = vote share)."""
        pool_id = str(body.get("pool_id"))
        self.get(self.pools, "pool", pool_id)
        fields = [f["name"] for f in body.get("fields") or []]
        if not fields:
            raise ApiFailure(400, "VALIDATION_ERROR", "Validation failed",
                             {"fields": {"code": "REQUIRED", "message": "fields are required"}})
        oid = self.next_id("op")

        def run() -> dict:
            votes: dict[str, dict[tuple, int]] = {}
            for a in self.assignments.values():
                if a["pool_id"] != pool_id or a["status"] not in ("SUBMITTED", "ACCEPTED"):
                    continue
                for task, solution in zip(a["tasks"], a.get("solutions") or [], strict=False):
                    values = tuple(solution["output_values"].get(f) for f in fields)
                    counts = votes.setdefault(task["id"], {})
                    counts[values] = counts.get(values, 0) + 1
            out = []
            for tid in sorted(votes):
                counts = votes[tid]
                best = max(sorted(counts, key=str), key=lambda v: counts[v])
                out.append({"pool_id": pool_id, "task_id": tid,
                            "confidence": counts[best] / sum(counts.values()),
                            "output_values": dict(zip(fields, best, strict=True))})
            self.aggregated[oid] = out
            return {"items_count": len(out)}

        return 202, self.operation("SOLUTION.AGGREGATE", {"pool_id": pool_id}, op_id=oid,
                                   effect=run)

    def aggregated_solutions(self, oid: str, params: dict[str, str]) -> dict:
        op = self.get(self.operations, "operation", oid)
        if op["status"] != "SUCCESS":
            raise ApiFailure(409, "CONFLICT_STATE", f"operation {oid} is {op['status']}")
        rows = self.aggregated.get(oid, [])
        params = {**params, "sort": params.get("sort", "task_id")}
        return search(rows, params)

    # -- user restrictions -------------------------------------------------
    def put_restriction(self, body: dict) -> tuple[int, dict]:
        for rid, existing in self.restrictions.items():
            same = all(
                existing.get(k) == body.get(k)
                for k in ("scope", "user_id", "project_id", "pool_id")
            )
            if same:
                return 201, copy.deepcopy(self.restrictions[rid])
        rid = self.next_id("restriction")
        self.restrictions[rid] = {**body, "id": rid, "created": iso(self.now)}
        return 201, copy.deepcopy(self.restrictions[rid])

    def delete_restriction(self, rid: str) -> tuple[int, None]:
        """Lift a restriction (an unban); 404 when there is none with that id."""
        self.get(self.restrictions, "user restriction", rid)
        del self.restrictions[rid]
        return 204, None

    def is_restricted(self, user_id: str, pool: dict) -> bool:
        for r in self.restrictions.values():
            if r.get("user_id") != user_id:
                continue
            if r.get("scope") == "ALL_PROJECTS":
                return True
            if r.get("scope") == "PROJECT" and str(r.get("project_id")) == pool["project_id"]:
                return True
            if r.get("scope") == "POOL" and str(r.get("pool_id")) == pool["id"]:
                return True
        return False
