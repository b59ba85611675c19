"""HTTP front of the emulator: routing, Toloka error shapes, fault injection."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from crowd.emulator.simulate import Simulator
from crowd.emulator.state import ApiFailure, TolokaState, search

FaultKind = Literal["500", "503", "429", "timeout", "slow"]


@dataclass(frozen=True)
class Fault:
    """A deterministic fault on one route (``"POST /api/v1/tasks"``; ``"*"`` = any).

    ``nth`` picks the n-th call (1-based) of that route; without it, each call fails
    with probability ``rate`` drawn from ``(seed, route, call number)``. Kinds:
    ``"500"``/``"503"`` answer an error without touching state; ``"429"`` answers Too
    Many Requests (Toloka's body, ``payload.interval`` ``MIN``, a ``Retry-After`` of
    ``retry_after`` seconds) without touching state; ``"timeout"`` does
    the work, then holds the reply ``seconds`` (the client gives up and retries:
    the nastiest case for idempotency); ``"slow"`` waits ``seconds``, then works.
    """

    route: str
    kind: FaultKind = "500"
    nth: int | None = None
    rate: float = 1.0
    seconds: float = 2.0


_ROUTES: list[tuple[str, str]] = [
    ("GET", "/api/v1/requester"),
    ("GET", "/api/v1/projects"),
    ("POST", "/api/v1/projects"),
    ("GET", "/api/v1/projects/{id}"),
    ("GET", "/api/v1/pools"),
    ("POST", "/api/v1/pools"),
    ("GET", "/api/v1/pools/{id}"),
    ("POST", "/api/v1/pools/{id}/open"),
    ("POST", "/api/v1/pools/{id}/close"),
    ("GET", "/api/v1/trainings"),
    ("POST", "/api/v1/trainings"),
    ("GET", "/api/v1/trainings/{id}"),
    ("POST", "/api/v1/trainings/{id}/open"),
    ("POST", "/api/v1/trainings/{id}/close"),
    ("GET", "/api/v1/tasks"),
    ("POST", "/api/v1/tasks"),
    ("GET", "/api/v1/tasks/{id}"),
    ("PATCH", "/api/v1/tasks/{id}"),
    ("PATCH", "/api/v1/tasks/{id}/set-overlap-or-min"),
    ("GET", "/api/v1/assignments"),
    ("GET", "/api/v1/assignments/{id}"),
    ("PATCH", "/api/v1/assignments/{id}"),
    ("GET", "/api/v1/operations/{id}"),
    ("GET", "/api/v1/operations/{id}/log"),
    ("GET", "/api/v1/user-restrictions"),
    ("PUT", "/api/v1/user-restrictions"),
    ("GET", "/api/v1/user-restrictions/{id}"),
    ("DELETE", "/api/v1/user-restrictions/{id}"),
    ("POST", "/api/v1/aggregated-solutions/aggregate-by-pool"),
    ("GET", "/api/v1/aggregated-solutions/{id}"),
]
_COMPILED = [(m, t, re.compile("^" + t.replace("{id}", "(?P<id>[^/]+)") + "$")) for m, t in _ROUTES]


class Api:
    """Dispatches ``(method, template)`` to `TolokaState` / `Simulator`."""

    def __init__(self, state: TolokaState, sim: Simulator, *, answer_on_poll: int = 0) -> None:
        self.state, self.sim, self.answer_on_poll = state, sim, answer_on_poll

    def handle(
        self, method: str, template: str, ident: str | None, params: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        st = self.state
        key = f"{method} {template}"
        i = ident or ""
        pools = {p: v for p, v in st.pools.items() if v["type"] == "REGULAR"}
        trainings = {p: v for p, v in st.pools.items() if v["type"] == "TRAINING"}
        routes: dict[str, Callable[[], tuple[int, Any]]] = {
            "GET /api/v1/requester": lambda: (
                200,
                {"id": "requester", "balance": 1000, "public_name": {}},
            ),
            "GET /api/v1/projects": lambda: (200, search(st.projects.values(), params)),
            "POST /api/v1/projects": lambda: st.create_project(body),
            "GET /api/v1/projects/{id}": lambda: (200, st.get(st.projects, "project", i)),
            "GET /api/v1/pools": lambda: (200, search(pools.values(), params)),
            "POST /api/v1/pools": lambda: st.create_pool(body),
            "GET /api/v1/pools/{id}": lambda: (200, st.get(pools, "pool", i)),
            "POST /api/v1/pools/{id}/open": lambda: st.set_pool_status(i, open_=True, kind="POOL"),
            "POST /api/v1/pools/{id}/close": lambda: st.set_pool_status(
                i, open_=False, kind="POOL"
            ),
            "GET /api/v1/trainings": lambda: (200, search(trainings.values(), params)),
            "POST /api/v1/trainings": lambda: st.create_pool(body, training=True),
            "GET /api/v1/trainings/{id}": lambda: (200, st.get(trainings, "training", i)),
            "POST /api/v1/trainings/{id}/open": lambda: st.set_pool_status(
                i, open_=True, kind="TRAINING"
            ),
            "POST /api/v1/trainings/{id}/close": lambda: st.set_pool_status(
                i, open_=False, kind="TRAINING"
            ),
            "GET /api/v1/tasks": lambda: (200, self._tasks(params)),
            "POST /api/v1/tasks": lambda: st.create_tasks(body, params),
            "GET /api/v1/tasks/{id}": lambda: (
                200,
                st.task_view(st.get(st.tasks, "task", i)["id"]),
            ),
            "PATCH /api/v1/tasks/{id}": lambda: st.set_overlap(i, body, or_min=False),
            "PATCH /api/v1/tasks/{id}/set-overlap-or-min": lambda: st.set_overlap(
                i, body, or_min=True
            ),
            "GET /api/v1/assignments": lambda: (200, self._assignments(params)),
            "GET /api/v1/assignments/{id}": lambda: (200, st.get(st.assignments, "assignment", i)),
            "PATCH /api/v1/assignments/{id}": lambda: st.patch_assignment(i, body),
            "GET /api/v1/operations/{id}": lambda: (200, st.poll_operation(i)),
            "GET /api/v1/operations/{id}/log": lambda: (
                200,
                st.op_logs.get(st.get(st.operations, "operation", i)["id"], []),
            ),
            "GET /api/v1/user-restrictions": lambda: (
                200,
                search(st.restrictions.values(), params),
            ),
            "PUT /api/v1/user-restrictions": lambda: st.put_restriction(body),
            "GET /api/v1/user-restrictions/{id}": lambda: (
                200,
                st.get(st.restrictions, "user restriction", i),
            ),
            "DELETE /api/v1/user-restrictions/{id}": lambda: st.delete_restriction(i),
            "POST /api/v1/aggregated-solutions/aggregate-by-pool": lambda: st.aggregate_by_pool(
                body
            ),
            "GET /api/v1/aggregated-solutions/{id}": lambda: (
                200,
                st.aggregated_solutions(i, params),
            ),
        }
        return routes[key]()

    def _tasks(self, params: dict[str, str]) -> dict:
        rows = self.state.tasks.values()
        if "pool_id" in params:
            rows = [self.state.tasks[t] for t in self.state.pool_tasks.get(params["pool_id"], [])]
        found = search(rows, params)
        found["items"] = [self.state.task_view(t["id"]) for t in found["items"]]
        return found

    def _assignments(self, params: dict[str, str]) -> dict:
        if self.answer_on_poll and "pool_id" in params:
            self.sim.work(params["pool_id"], n=self.answer_on_poll)
        rows = self.state.assignments.values()
        if "pool_id" in params:
            rows = [a for a in rows if a["pool_id"] == params["pool_id"]]
        return search(rows, params)


class FaultPlan:
    def __init__(
        self,
        faults: Sequence[Fault] = (),
        *,
        fault_rate: float = 0.0,
        seed: int = 0,
        too_many_requests: float = 0.0,
    ) -> None:
        self.faults, self.fault_rate, self.seed = list(faults), fault_rate, seed
        self.too_many_requests = too_many_requests
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def pick(self, route: str) -> Fault | None:
        with self._lock:
            self.calls[route] += 1
            n = self.calls[route]
        for fault in self.faults:
            if fault.route not in (route, "*"):
                continue
            if fault.nth is not None:
                if fault.nth == n:
                    return fault
            elif random.Random(f"{self.seed}|{route}|{n}|f").random() < fault.rate:
                return fault
        if (
            self.fault_rate
            and random.Random(f"{self.seed}|{route}|{n}|r").random() < self.fault_rate
        ):
            return Fault(route, kind="503" if n % 2 else "500")
        if (
            self.too_many_requests
            and random.Random(f"{self.seed}|{route}|{n}|q").random() < self.too_many_requests
        ):
            return Fault(route, kind="429")
        return None


def make_handler(
    api: Api,
    lock: threading.Lock,
    faults: FaultPlan,
    *,
    latency: float,
    log: list[tuple[str, str, int]],
    retry_after_s: int = 0,
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            return

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = b"" if body is None else json.dumps(body, default=str).encode()
            try:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _error(
            self,
            status: int,
            code: str,
            message: str,
            payload: Any = None,
            headers: dict[str, str] | None = None,
        ) -> None:
            body = {"code": code, "message": message, "request_id": f"emu-{len(log):08d}"}
            if payload is not None:
                body["payload"] = payload
            self._send(status, body, headers)

        def _dispatch(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            for m, template, rx in _COMPILED:  # noqa: B007 - used after the loop
                match = rx.match(parts.path)
                if m == method and match:
                    break
            else:
                log.append((method, parts.path, 404))
                return self._error(404, "NOT_FOUND", f"no route {method} {parts.path}")
            route = f"{method} {template}"
            if not self.headers.get("Authorization"):
                log.append((method, template, 401))
                return self._error(401, "AUTHENTICATION_ERROR", "no token")
            if latency:
                time.sleep(latency)
            fault = faults.pick(route)
            if fault is not None and fault.kind in ("500", "503"):
                log.append((method, template, int(fault.kind)))
                code = "INTERNAL_ERROR" if fault.kind == "500" else "REMOTE_SERVICE_UNAVAILABLE"
                return self._error(int(fault.kind), code, "injected fault")
            if fault is not None and fault.kind == "429":
                log.append((method, template, 429))
                return self._error(
                    429,
                    "TOO_MANY_REQUESTS",
                    "Too many requests: the minute quota is exceeded",
                    {"interval": "MIN", "limit": 1000},
                    {"Retry-After": str(retry_after_s)},
                )
            if fault is not None and fault.kind == "slow":
                time.sleep(fault.seconds)
            params = dict(parse_qsl(parts.query))
            try:
                body = json.loads(raw) if raw else None
                with lock:
                    status, out = api.handle(
                        method, template, match.groupdict().get("id"), params, body
                    )
            except ApiFailure as exc:
                log.append((method, template, exc.status))
                return self._error(exc.status, exc.code, exc.message, exc.payload)
            except (ValueError, KeyError, TypeError) as exc:
                log.append((method, template, 400))
                return self._error(400, "VALIDATION_ERROR", f"bad request: {exc!r}")
            log.append((method, template, status))
            if fault is not None and fault.kind == "timeout":
                time.sleep(fault.seconds)
            self._send(status, out)

        def do_GET(self) -> None:  # noqa: N802
            self._dispatch("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._dispatch("PUT")

        def do_PATCH(self) -> None:  # noqa: N802
            self._dispatch("PATCH")

        def do_DELETE(self) -> None:  # noqa: N802
            self._dispatch("DELETE")

        def send_error(self, code: int, message: str | None = None, explain: str | None = None
                       ) -> None:
            """What http.server answers by itself (an unsupported method: 501, a malformed
            request: 400) in Toloka's error shape too, never an HTML page."""
            log.append((getattr(self, "command", None) or "?",
                        urlsplit(getattr(self, "path", None) or "/").path, code))
            self.close_connection = True
            kind = {501: "NOT_IMPLEMENTED", 404: "NOT_FOUND"}.get(code, "VALIDATION_ERROR")
            self._error(code, kind, message or explain or "unsupported request")

    return Handler


def make_server(
    handler: type[BaseHTTPRequestHandler], *, host: str, port: int
) -> ThreadingHTTPServer:
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("the emulator binds to loopback only")
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
