"""Shared steps of the crowd benches: replay recorded labels through the emulator."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import pandas as pd

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

from crowd.aggregation import METHODS, aggregate  # noqa: E402
from crowd.config import CrowdConfig  # noqa: E402
from crowd.emulator import Emulator  # noqa: E402
from crowd.flow import run_flow  # noqa: E402
from crowd.pull import pull  # noqa: E402
from crowd.push import PushPlan, push  # noqa: E402
from crowd.store import MemoryStore  # noqa: E402
from crowd.toloka import make_client  # noqa: E402


@dataclass
class Replayed:
    answers: pd.DataFrame
    seconds: float


def replay_all(
    *, recorded: pd.DataFrame, policy: list[dict], max_overlap: int, seed: int = 0
) -> Replayed:
    """Push every item with overlap = max answers per item, let replay workers give every
    recorded answer, pull it all (the "take every answer" baseline)."""
    started = time.perf_counter()
    items = pd.DataFrame({"item_id": sorted(recorded["task_key"].unique())})
    config = CrowdConfig(
        overlap=max_overlap,
        min_answers=1,
        max_overlap=max_overlap,
        golden_per_suite=0,
        auto_accept=True,
        tasks_per_suite=10,
        reward_per_task=0.001,
    )
    with Emulator(seed=seed, replay=recorded) as emu:
        client = make_client(url=emu.url, timeout=60)
        pool_id = push(
            client,
            plan=PushPlan(key="replay-all", policy=policy, items=items, config=config),
            store=MemoryStore(),
        ).pool_id
        emu.work(pool_id)
        answers = pull(client, pool_id=pool_id, batch_size=2000).answers
    return Replayed(answers=answers, seconds=time.perf_counter() - started)


def accuracy(verdicts: pd.DataFrame, gold: pd.Series) -> float:
    v = verdicts.set_index("task")["label"].reindex(gold.index)
    return float((v == gold).mean())


def method_table(answers: pd.DataFrame, gold: pd.Series, *, methods=METHODS) -> pd.DataFrame:
    """Accuracy on gold per method: unsupervised, and with half of the gold given to the
    method (2-fold: guided on one half, scored on the other)."""
    rows = []
    halves = [gold.iloc[::2], gold.iloc[1::2]]
    for method in methods:
        t0 = time.perf_counter()
        row: dict = {"method": method}
        if method != "gold_mv":
            out = aggregate(answers, method=method)
            row["accuracy"] = accuracy(out, gold)
            row["needs_more_share"] = float((out["status"] == "needs_more").mean())
        scores = []
        for given, held in (halves, halves[::-1]):
            guided = aggregate(answers, method=method, gold=given)
            scores.append(accuracy(guided, held) * len(held))
        row["accuracy_half_gold_given"] = sum(scores) / len(gold)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    return pd.DataFrame(rows)


def dynamic(
    *,
    recorded: pd.DataFrame,
    policy: list[dict],
    gold: pd.Series,
    method: str,
    target: float,
    start: int,
    max_overlap: int,
    seed: int = 0,
) -> dict:
    """Dynamic overlap over the replay: start with ``start`` answers per item, ask more only
    where the aggregate is unsure."""
    t0 = time.perf_counter()
    items = pd.DataFrame({"item_id": sorted(recorded["task_key"].unique())})
    config = CrowdConfig(
        overlap=start,
        min_answers=start,
        max_overlap=max_overlap,
        target_confidence=target,
        golden_per_suite=0,
        auto_accept=True,
        reward_per_task=0.001,
        aggregation=method,
    )
    with Emulator(seed=seed, replay=recorded) as emu:
        client = make_client(url=emu.url, timeout=60)
        result = run_flow(
            client,
            plan=PushPlan(key=f"dyn-{method}", policy=policy, items=items, config=config),
            store=MemoryStore(),
            wait=emu.work,
            check=False,
        )
    answers = result.valid
    # the product's outcome: decided items carry their frozen label; items sent to people
    # are not the crowd's (counted apart, as "to people"), never scored with a best guess
    final = result.verdicts.copy()
    final.loc[final["status"] != "decided", "label"] = None
    on_gold = result.verdicts.set_index("task")["status"].reindex(gold.index)
    return {
        "method": method,
        "start": start,
        "target": target,
        "max_overlap": max_overlap,
        "answers_per_item": len(answers) / answers["task"].nunique(),
        "answers_per_gold_item": float(
            answers[answers["task"].isin(gold.index)].groupby("task").size().mean()
        ),
        "accuracy": accuracy(final, gold[on_gold == "decided"]),
        "to_people_gold": float((on_gold == "to_people").mean()),
        "rounds": len(result.rounds),
        "decided_share": float((result.verdicts["status"] == "decided").mean()),
        "seconds": time.perf_counter() - t0,
    }
