"""Replay a team's recorded crowd answers through the product's crowd path, to size
overlap and budget before spending money (``quorum crowd replay FILE``).

The recording (`read_recording`: CSV or Parquet) has one row per answer: ``item``,
``worker``, ``label``, optionally ``time`` (seconds spent) and ``gold`` (the item's
known label, on any of its rows). `replay` shuffles the rows with ``seed`` (so the
order of answers within an item is random: a file grouped by item would otherwise hand
the first-listed workers every first answer), starts an `Emulator` whose workers are
the recorded ones (each answers only what they answered), and runs `crowd.flow.run_flow`
— push, then rounds of `crowd.rounds.play_round` (pull → review → aggregate → decide /
ask for more / to people), the same rounds the backend's crowd job plays — with the
given `CrowdConfig`. Gold items become control tasks (``golden_share`` of the items,
every other gold item in a seeded order); accuracy is scored on the other gold items.

Figures (`ReplayReport`): accuracy against gold of the crowd's decisions, the share of
items sent to people (their accuracy is not the crowd's: reported apart), answers bought
per real item, control answers per item, cost; and the same crowd under majority vote
over every recorded answer, the usual baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crowd.aggregation import aggregate
from crowd.config import CrowdConfig
from crowd.emulator import Emulator
from crowd.flow import FlowResult, run_flow
from crowd.push import PushPlan
from crowd.quality import reliability
from crowd.store import MemoryStore
from crowd.toloka import make_client

REQUIRED = ("item", "worker", "label")


class RecordingError(ValueError):
    """The recording cannot be replayed (missing file or columns, nothing in it)."""


def read_recording(path: Path | str) -> pd.DataFrame:
    """A CSV or Parquet recording as strings: ``item, worker, label[, time][, gold]``."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"no recording at {path}")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (ValueError, OSError, ImportError) as exc:
        raise RecordingError(f"cannot read {path}: {exc}") from exc
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise RecordingError(
            f"{path} lacks the column(s) {', '.join(missing)}: a recording has item, worker, "
            "label and optionally time (seconds) and gold"
        )
    frame = frame.dropna(subset=list(REQUIRED))
    if frame.empty:
        raise RecordingError(f"{path} holds no answers")
    out = frame[list(REQUIRED)].astype(str)
    if "time" in frame.columns:
        seconds = pd.to_numeric(frame["time"], errors="coerce")
        if seconds.isna().any() or (seconds < 0).any():
            raise RecordingError(f"{path}: 'time' must be seconds (a number >= 0) on every row")
        out["time"] = seconds.astype(float)
    if "gold" in frame.columns:
        out["gold"] = frame["gold"].where(frame["gold"].notna(), None)
    return out.reset_index(drop=True)


@dataclass(frozen=True)
class ReplayReport:
    items: int
    workers: int
    recorded_answers: int
    scored_gold: int  # gold items scored (not used as control tasks)
    control_tasks: int
    accuracy: float  # crowd decisions right / scored gold items decided by the crowd
    to_people: float  # share of real items sent to people (ties, no agreement at the cap)
    to_people_gold: float  # the same among the scored gold items
    answers_per_item: float  # paid answers on real items / real items
    control_answers_per_item: float  # paid answers on control tasks / real items
    cost: float
    rounds: int
    stopped: str
    mv_all_accuracy: float  # majority vote over every recorded answer (ties count wrong)
    mv_all_ties: float
    mv_all_answers_per_item: float
    reward_per_task: float
    seconds: float
    ds_all_accuracy: float = float("nan")  # Dawid–Skene over every recorded answer
    #: `crowd.quality.reliability` of the stated confidence of the crowd's decisions on
    #: the scored gold (bin, n, stated, right, low, high)
    reliability: tuple[dict, ...] = ()

    def rows(self) -> list[tuple[str, str, str]]:
        """(what, Quorum, majority vote over all answers) for printing."""
        return [
            ("accuracy on gold", f"{self.accuracy:.3f}", f"{self.mv_all_accuracy:.3f}"),
            ("(Dawid–Skene, all answers)", "", f"{self.ds_all_accuracy:.3f}"),
            ("sent to people / ties", f"{self.to_people:.1%}", f"{self.mv_all_ties:.1%}"),
            ("answers per item", f"{self.answers_per_item:.2f}",
             f"{self.mv_all_answers_per_item:.2f}"),
            ("+ control answers per item", f"{self.control_answers_per_item:.2f}", "0"),
            ("cost $", f"{self.cost:.2f}",
             f"{self.mv_all_answers_per_item * self.items * self.reward_per_task:.2f}"),
        ]


@dataclass(frozen=True)
class Replayed:
    report: ReplayReport
    flow: FlowResult
    scored: pd.Series  # gold of the scored items


def _gold_of(recording: pd.DataFrame) -> pd.Series:
    if "gold" not in recording.columns:
        return pd.Series(dtype=object)
    known = recording.dropna(subset=["gold"]).drop_duplicates("item")
    return pd.Series(known["gold"].astype(str).to_numpy(), index=known["item"].to_numpy())


def replay(
    recording: pd.DataFrame,
    *,
    config: CrowdConfig,
    seed: int = 0,
    golden_share: float = 0.1,
    golden_min: int = 10,
    golden_max: int = 500,
    max_rounds: int | None = None,
    context: pd.DataFrame | None = None,
    scores: pd.DataFrame | None = None,
) -> Replayed:
    """Replay ``recording`` (`read_recording`'s columns) under ``config``; see the module.
    ``context``: an earlier pool's valid answers (``Replayed.flow.valid``), so that worker
    skill carries over as in the backend (`crowd.rounds.decide`). ``scores``: the
    classifier's probabilities, ``item × label`` (the items' prior, `CrowdConfig.classifier`).
    With ``config.golden_per_worker`` > 0 the pool holds that many control tasks (instead
    of ``golden_share`` of the items)."""
    import time as _time

    started = _time.perf_counter()
    shuffled = recording.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    shuffled = shuffled.drop_duplicates(["item", "worker"], keep="first")
    gold = _gold_of(shuffled)
    labels = sorted(set(shuffled["label"]) | set(gold.astype(str)))
    items = sorted(shuffled["item"].unique())
    rng = np.random.default_rng(seed)
    order = list(gold.index[rng.permutation(len(gold))]) if len(gold) else []
    n_control = 0
    if config.golden_per_suite and len(order) >= 2:
        want = (config.golden_per_worker if config.golden_per_worker
                else min(max(math.ceil(golden_share * len(items)), golden_min), golden_max))
        n_control = min(want, len(order) // 2)  # keep at least half of the gold to score
    control, scored_ids = order[:n_control], order[n_control:]
    real = [i for i in items if i not in set(control)]
    item_frame = pd.DataFrame({"item_id": real, "title": real})
    if scores is not None and len(scores):
        by_item = scores.copy()
        by_item.index = by_item.index.astype(str)
        rows = by_item[~by_item.index.duplicated()].to_dict("index")
        item_frame["scores"] = [rows.get(i) for i in real]
    plan = PushPlan(
        key=f"replay-{seed}",
        policy=[{"key": lab, "title": lab} for lab in labels],
        items=item_frame,
        golden=(pd.DataFrame({"item_id": control, "title": control,
                              "label": gold.reindex(control).astype(str).to_numpy()})
                if control else None),
        config=config,
    )
    book = shuffled.rename(columns={"item": "task_key", "time": "time_spent_s"})
    with Emulator(seed=seed, replay=book.drop(columns=["gold"], errors="ignore")) as emu:
        client = make_client(url=emu.url, timeout=60)
        flow = run_flow(client, plan=plan, store=MemoryStore(), wait=emu.work,
                        max_rounds=max_rounds, context=context)
    scored = gold.reindex(scored_ids)
    verdicts = flow.verdicts.set_index("task")
    on_gold = verdicts.reindex(scored.index)
    by_crowd = on_gold["status"] == "decided"
    right = (on_gold["label"] == scored) & by_crowd
    paid = flow.answers[flow.answers["assignment_status"] != "REJECTED"]
    is_control = paid["is_golden"].astype(bool)
    everything = shuffled.rename(columns={"item": "task"})
    all_mv = aggregate(everything, method="mv").set_index("task")
    mv_on_gold = all_mv["label"].reindex(scored.index)
    all_ds = aggregate(everything, method="ds").set_index("task")
    ds_on_gold = all_ds["label"].reindex(scored.index)
    decided = on_gold[by_crowd]
    table = reliability(decided["confidence"].astype(float),
                        decided["label"] == scored.reindex(decided.index))
    n_real = len(real)
    report = ReplayReport(
        items=n_real,
        workers=shuffled["worker"].nunique(),
        recorded_answers=len(shuffled),
        scored_gold=len(scored),
        control_tasks=len(control),
        accuracy=float(right.sum() / by_crowd.sum()) if by_crowd.any() else float("nan"),
        to_people=float((verdicts["status"] == "to_people").mean()),
        to_people_gold=float((on_gold["status"] == "to_people").mean()) if len(scored) else 0.0,
        answers_per_item=float((~is_control).sum() / n_real),
        control_answers_per_item=float(is_control.sum() / n_real),
        cost=float(len(paid) * config.reward_per_task),
        rounds=len(flow.rounds),
        stopped=flow.stopped,
        mv_all_accuracy=float((mv_on_gold == scored).mean()) if len(scored) else float("nan"),
        ds_all_accuracy=float((ds_on_gold == scored).mean()) if len(scored) else float("nan"),
        reliability=tuple(table.to_dict("records")),
        mv_all_ties=float(all_mv["label"].isna().mean()),
        mv_all_answers_per_item=float(
            shuffled[shuffled["item"].isin(set(real))].shape[0] / n_real),
        reward_per_task=config.reward_per_task,
        seconds=_time.perf_counter() - started,
    )
    return Replayed(report=report, flow=flow, scored=scored)
