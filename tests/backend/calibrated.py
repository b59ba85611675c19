"""Test helpers: back a threshold set the way a team would — a calibration run on
people's answers, then apply — instead of writing backing by hand."""

from __future__ import annotations

import itertools

import numpy as np

from backend.calibration import service as calibration
from backend.calibration import thresholds
from backend.db import utcnow
from backend.items.service import ingest
from tests.conftest import item_row

_batch = itertools.count()


def calibrate_reuse(session, settings, policy, *, max_distance: float = 0.1,  # noqa: ANN001
                    n: int = 80, same: bool = True, apply: bool = True):  # noqa: ANN201
    """``n`` pair tasks at distances up to ``max_distance`` (measured by the current
    encoder), each answered "same" (or "different") by three people, then a similarity
    calibration run; the proposed set is applied when ``apply``. Returns the run."""
    from backend.ml_adapter.service import get_encoder

    now = utcnow()
    first = 90000 + 10000 * next(_batch)
    _, ids = ingest(session=session, policy=policy, now=now,
                    rows=[item_row(first + i, title=f"pair item {i}") for i in range(2 * n)])
    pairs = [(ids[2 * i], ids[2 * i + 1], float(d))
             for i, d in enumerate(np.linspace(max_distance / n, max_distance, n))]
    tasks = calibration.enqueue_pairs(session=session, pairs=pairs, now=now, settings=settings,
                                      encoder_id=get_encoder().encoder_id)
    for task_id in tasks:
        for worker in ("w1", "w2", "w3"):
            calibration.record_pair_answer(session=session, task_id=task_id, worker_id=worker,
                                           answer="same" if same else "different", now=now)
    run = calibration.run_calibration(session=session, kind="similarity", settings=settings,
                                      policy=policy)
    if apply and run.result["proposed_version"]:
        thresholds.apply(session=session, version=run.result["proposed_version"])
    return run
