"""Simulated crowd workers and recorded-answer replay for the Toloka emulator.

Every random draw is seeded by ``(seed, worker, task)``, so a worker's answer to a
task does not depend on the order in which suites were handed out.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd

WorkerKind = Literal["honest", "random", "constant", "replay"]


@dataclass(frozen=True)
class SimWorker:
    """One simulated crowd worker.

    ``accuracy`` is the diagonal of a symmetric confusion matrix (errors spread
    uniformly over the other labels); ``seconds_per_task`` is the mean time spent.
    Spammers are ``kind="random"`` (uniform answers) or ``kind="constant"``
    (always the first label); both are fast by construction in `make_workers`.
    """

    id: str
    accuracy: float = 0.85
    seconds_per_task: float = 12.0
    kind: WorkerKind = "honest"


def make_workers(
    n: int,
    *,
    seed: int = 0,
    spammer_share: float = 0.1,
    accuracy: tuple[float, float] = (0.65, 0.95),
) -> list[SimWorker]:
    """``n`` workers: honest ones with accuracy drawn uniformly in ``accuracy`` and
    8–20 s per task, plus ``round(n * spammer_share)`` spammers at 1–2 s per task."""
    rng = random.Random(f"workers|{seed}")
    n_spam = round(n * spammer_share)
    out: list[SimWorker] = []
    for i in range(n):
        wid = f"w{i:04d}"
        if i >= n - n_spam:
            kind: WorkerKind = "random" if (i % 2 == 0) else "constant"
            out.append(SimWorker(wid, accuracy=0.0, seconds_per_task=rng.uniform(1, 2), kind=kind))
        else:
            out.append(
                SimWorker(wid, accuracy=rng.uniform(*accuracy), seconds_per_task=rng.uniform(8, 20))
            )
    return out


def hidden_truth(key: str, labels: Sequence[str]) -> str:
    """The latent true label of a task the caller gave no truth for: a stable hash."""
    return labels[zlib.crc32(key.encode()) % len(labels)]


def simulate_answer(
    worker: SimWorker, *, seed: int, task_id: str, truth: str, labels: Sequence[str]
) -> tuple[str, float]:
    """``(label, seconds)`` that ``worker`` gives for a task whose true label is ``truth``."""
    rng = random.Random(f"{seed}|{worker.id}|{task_id}")
    seconds = worker.seconds_per_task * rng.uniform(0.7, 1.3)
    if worker.kind == "constant":
        return labels[0], seconds
    if worker.kind == "random":
        return rng.choice(list(labels)), seconds
    if rng.random() < worker.accuracy or len(labels) < 2:
        return truth, seconds
    return rng.choice([label for label in labels if label != truth]), seconds


class ReplayBook:
    """Recorded real answers, looked up by ``(worker, task_key)``.

    ``answers`` columns: ``task_key`` (matched against the task's input field the
    emulator was told to key on), ``worker``, ``label``; optional ``time_spent_s``.
    Each real worker becomes an emulator worker who answers only what they answered
    in the recording, in recording order.
    """

    def __init__(self, answers: pd.DataFrame, *, seconds_per_task: float = 10.0) -> None:
        missing = {"task_key", "worker", "label"} - set(answers.columns)
        if missing:
            raise ValueError(f"replay answers lack columns {sorted(missing)}")
        df = answers.drop_duplicates(["task_key", "worker"], keep="first")
        self.labels: dict[tuple[str, str], str] = {}
        self.by_worker: dict[str, list[str]] = {}
        keys = df["task_key"].astype(str).tolist()
        workers = df["worker"].astype(str).tolist()
        for key, worker, label in zip(keys, workers, df["label"].astype(str).tolist(), strict=True):
            self.labels[(worker, key)] = label
            self.by_worker.setdefault(worker, []).append(key)
        self.seconds: dict[tuple[str, str], float] = {}
        if "time_spent_s" in df.columns:
            spent = df["time_spent_s"].astype(float).tolist()
            self.seconds = dict(zip(zip(workers, keys, strict=True), spent, strict=True))
        self.workers = [
            SimWorker(w, accuracy=float("nan"), seconds_per_task=seconds_per_task, kind="replay")
            for w in self.by_worker
        ]

    def answer(self, worker: SimWorker, key: str) -> tuple[str, float] | None:
        label = self.labels.get((worker.id, key))
        if label is None:
            return None
        return label, self.seconds.get((worker.id, key), worker.seconds_per_task)
