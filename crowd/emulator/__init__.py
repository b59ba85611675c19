"""A local Toloka API v1 emulator with simulated (or replayed) crowd workers.

>>> with Emulator(seed=1, workers=20) as emu:          # doctest: +SKIP
...     client = TolokaClient("token", url=emu.url)
...     ...                                             # push tasks, open the pool
...     emu.work(pool_id)                               # workers answer
...     ...                                             # pull assignments

Workers answer only when asked: `Emulator.work` (explicit), or, with
``answer_on_poll=k``, each ``GET /api/v1/assignments?pool_id=...`` first lets
workers take up to ``k`` suites of that pool. Both are deterministic under
``seed``; see `crowd.emulator.simulate` for the rules.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self

import pandas as pd

from crowd.emulator.realism import Realism
from crowd.emulator.server import Api, Fault, FaultPlan, make_handler, make_server
from crowd.emulator.simulate import Simulator
from crowd.emulator.state import TolokaState
from crowd.emulator.workers import ReplayBook, SimWorker, make_workers

__all__ = ["Emulator", "Fault", "Realism", "SimWorker", "make_workers"]


class Emulator:
    """Toloka API emulator on ``127.0.0.1`` in a background thread.

    Args:
        seed: seeds workers, answers and fault draws.
        workers: a count (see `make_workers`: 10% fast spammers) or explicit `SimWorker`s.
        truth: hidden true label per task key (``input_values[key_field]``); tasks
            without one get a stable hash-chosen label; golden tasks use their known solution.
        replay: recorded answers (``task_key, worker, label[, time_spent_s]``): each real
            worker becomes an emulator worker answering what they really answered.
        key_field: the input field matched against ``truth`` / ``replay`` keys.
        fault_rate: fraction of all calls answered 500/503 (deterministic draws).
        faults: targeted `Fault`s (n-th call of a route, time-outs, slow replies).
        latency: seconds added to every request.
        answer_on_poll: suites answered per ``GET /api/v1/assignments`` of a pool (0 = never).
        realism: what real pools do, switched on one by one (`Realism`: ACTIVE, SKIPPED
            and EXPIRED suites, PENDING operations, 429s, the pool's quality-control
            rules evaluated); ``Realism()`` (the default) is the plain emulator;
            ``Realism.real_pool()`` switches everything on.
        port: 0 picks a free port.
        id_base: ids (projects, pools after 1,000,000, tasks, assignments, …) start after
            it, so a fresh emulator can avoid the ids an earlier one handed out.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        workers: int | Sequence[SimWorker] = 20,
        truth: Mapping[str, str] | None = None,
        replay: pd.DataFrame | None = None,
        key_field: str = "item_id",
        fault_rate: float = 0.0,
        faults: Sequence[Fault] = (),
        latency: float = 0.0,
        answer_on_poll: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        id_base: int = 0,
        realism: Realism | None = None,
    ) -> None:
        self.seed = seed
        self.realism = realism or Realism()
        self.state = TolokaState(id_base=id_base, pending_polls=self.realism.pending_polls)
        sim_workers = (
            make_workers(workers, seed=seed) if isinstance(workers, int) else list(workers)
        )
        book = ReplayBook(replay) if replay is not None else None
        self.simulator = Simulator(
            self.state,
            workers=sim_workers,
            seed=seed,
            truth=truth,
            replay=book,
            key_field=key_field,
            realism=self.realism,
        )
        self.faults = FaultPlan(
            faults,
            fault_rate=fault_rate,
            seed=seed,
            too_many_requests=self.realism.too_many_requests,
        )
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, int]] = []  # (method, route template, status)
        api = Api(self.state, self.simulator, answer_on_poll=answer_on_poll)
        handler = make_handler(
            api,
            self.lock,
            self.faults,
            latency=latency,
            log=self.requests,
            retry_after_s=self.realism.retry_after_s,
        )
        self._server = make_server(handler, host=host, port=port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def workers(self) -> list[SimWorker]:
        return self.simulator.workers

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="toloka-emulator", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def work(self, pool_id: str | None = None, *, n: int | None = None) -> int:
        """Let workers answer up to ``n`` suites (all they can when ``None``); returns the count."""
        with self.lock:
            return self.simulator.work(pool_id, n=n)

    def calls(self, route: str) -> list[int]:
        """Statuses answered on ``route`` (``"POST /api/v1/tasks"``), in order."""
        return [status for m, t, status in self.requests if f"{m} {t}" == route]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
