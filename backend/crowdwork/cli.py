"""``quorum crowd ...``: push crowd queues to Toloka, pull answers, status, the crowd report.

Without ``QUORUM_CROWD_TOLOKA_URL`` the commands start a local Toloka emulator with
simulated workers on loopback for their own run: ``push`` then lets the workers answer
and pulls rounds until the pool is finished (the emulator does not outlive the command).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from backend.errors import Conflict, QuorumError, ValidationFailed

crowd_app = typer.Typer(help="The crowd (Toloka pools, answers, aggregation, metrics).",
                        no_args_is_help=True)
console = Console(soft_wrap=True, width=120)


def _env() -> tuple[Any, Any, Any]:
    from backend.crowdwork.settings import get_crowd_settings
    from backend.migrate import upgrade
    from backend.policy import get_policy
    from backend.settings import get_settings

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    return settings, get_crowd_settings(), get_policy()


class TolokaUnreachable(QuorumError):
    """Toloka (or the emulator) did not answer, even after the client's retries."""

    status = 503
    exit_code = 6
    code = "unavailable"  # as backend.app answers an unreachable database


@contextmanager
def toloka_errors(url: str | None) -> Iterator[None]:
    """Toloka failures as one sentence and an exit code (4: Toloka refused or lacks what
    Quorum recorded, 6: unreachable), never a traceback."""
    import httpx
    import requests
    import toloka.client as tc

    where = url or "Toloka"
    try:
        yield
    except tc.exceptions.DoesNotExistApiError as exc:
        raise Conflict(f"{where} has no such object ({exc.message}): it is not the Toloka "
                       "these crowd pools were pushed to; 'quorum crowd expire' gives "
                       "their tasks back") from exc
    except tc.exceptions.TooManyRequestsApiError as exc:
        raise TolokaUnreachable(f"{where} still rate-limits Quorum (429 {exc.message}) after "
                                "the client's retries; run the command again later") from exc
    except tc.exceptions.ApiError as exc:
        raise Conflict(f"{where} refused the call: {exc.code} {exc.message}") from exc
    except TimeoutError as exc:  # toloka-kit's wait_operation: an operation never finished
        raise TolokaUnreachable(f"an operation on {where} did not finish in time (still "
                                "PENDING or RUNNING); run the command again later") from exc
    except (httpx.HTTPError, requests.RequestException) as exc:
        raise TolokaUnreachable(f"{where} does not answer ({type(exc).__name__}); check "
                                "QUORUM_CROWD_TOLOKA_URL or start the emulator") from exc


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1%}" if pct else f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def print_rounds(rounds: list[Any], out: Console) -> None:
    """One row per pull round; pair pools show ties and pairs given back instead of
    items sent to moderators."""
    pair = any(getattr(r, "kind", "item") == "pair" for r in rounds)
    table = Table(title="Crowd rounds (pair pool)" if pair else "Crowd rounds")
    middle = ("decided", "ties", "returned") if pair else ("decided", "to moderators")
    for col in ("round", "new answers", "rejected", "banned", *middle, "asked more",
                "unresolved"):
        table.add_column(col, justify="right")
    for n, r in enumerate(rounds, 1):
        mid = ((r.decided, r.ties, r.returned) if pair else (r.decided, r.to_moderators))
        table.add_row(str(n), str(r.new_answers), str(r.rejected), ", ".join(r.banned) or "0",
                      *[str(v) for v in mid], str(r.asked_more), str(r.unresolved))
    out.print(table)


@crowd_app.command("push")
def crowd_push(
    queue: Annotated[str, typer.Argument(
        help="a crowd queue, e.g. NEW_PRODUCTS_2026-11-24_1, or the pair queue PAIRS_2026-11-24")],
    method: Annotated[str | None, typer.Option(
        help="aggregation for this pool: mv, wawa, ds, sds, glad (default QUORUM_CROWD_AGGREGATION;"
             " pair pools: mv)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="push at most this many items")] = None,
) -> None:
    """Push QUEUE's pending tasks to the crowd as one pool (a re-run resumes, never duplicates):
    a label pool for a crowd queue of items, a pair pool for the pair queue."""
    from backend.crowdwork.expiry import expire_pool_now
    from backend.crowdwork.runtime import best_known_labels, open_crowd, work_rounds
    from backend.crowdwork.service import push_queue
    from backend.db import session_scope

    settings, crowd, policy = _env()
    truth = None
    if not crowd.toloka_url:
        with session_scope() as session:
            truth = best_known_labels(session=session)
    with (open_crowd(settings=settings, crowd=crowd, policy=policy, truth=truth) as c,
          toloka_errors(c.runtime.toloka_url)):
        s = push_queue(rt=c.runtime, queue_name=queue, method=method, limit=limit)
        for pid in s.expired:
            console.print(f"crowd pool {pid} expired (its Toloka is gone or it is past its "
                          "deadline): its open tasks are pushed again")
        if s.already_open:
            console.print(f"{queue}: nothing pending; already in crowd pool {s.pool_id}")
            return
        what = "pairs" if s.kind == "pair" else "items"
        console.print(f"{queue} → crowd {'pair ' if s.kind == 'pair' else ''}pool {s.pool_id} "
                      f"(Toloka pool {s.toloka_pool_id}): {s.items} {what} + {s.golden} control "
                      f"tasks; {s.created} tasks created, {s.reused} already there"
                      f"{' (resumed)' if s.resumed else ''}")
        if s.left_pending:
            console.print(f"{s.left_pending} tasks left pending in {queue} (push again)")
        if c.is_local:
            console.print(f"local emulator with {crowd.emulator_workers} simulated workers "
                          "(QUORUM_CROWD_TOLOKA_URL unset): working the pool now")
            rounds = work_rounds(c, pool_id=s.pool_id, max_rounds=crowd.max_rounds)
            print_rounds(rounds, console)
            if rounds and rounds[-1].state == "open":
                # the emulator ends with this command: give the waiting items back now
                gone = expire_pool_now(rt=c.runtime, pool_id=s.pool_id,
                                       reason=f"the local emulator's run ended after "
                                              f"{len(rounds)} rounds (QUORUM_CROWD_MAX_ROUNDS)")
                console.print(f"stopped after {len(rounds)} rounds "
                              f"(QUORUM_CROWD_MAX_ROUNDS={crowd.max_rounds}): "
                              f"{rounds[-1].unresolved} items still waiting; crowd pool "
                              f"{s.pool_id} expired and {gone.returned} tasks returned to "
                              f"{queue} (push again)")


@crowd_app.command("pull")
def crowd_pull(
    pool: Annotated[int | None, typer.Option(help="one crowd pool id (default: every open pool)")
                    ] = None,
) -> None:
    """Pull new answers, review them, aggregate, and decide or ask for more (one round)."""
    from backend.crowdwork.runtime import open_crowd
    from backend.crowdwork.service import get_pool, open_pool_ids, pull_pool
    from backend.db import session_scope

    settings, crowd, policy = _env()
    with session_scope() as session:
        ids = [get_pool(session=session, pool_id=pool).id] if pool is not None \
            else open_pool_ids(session=session)
    if not ids:
        console.print("no open crowd pools")
        return
    if not crowd.toloka_url:
        raise ValidationFailed("QUORUM_CROWD_TOLOKA_URL is unset: pools on the local emulator "
                               "are worked and pulled by 'quorum crowd push' itself; point it "
                               "at Toloka or a standalone emulator (python -m crowd.emulator)")
    with (open_crowd(settings=settings, crowd=crowd, policy=policy) as c,
          toloka_errors(c.runtime.toloka_url)):
        rounds = [pull_pool(rt=c.runtime, pool_id=pid) for pid in ids]
    print_rounds(rounds, console)


@crowd_app.command("expire")
def crowd_expire(
    pool: Annotated[int | None, typer.Option(
        help="expire this open or unfinished pool now (default: every stale pool)")] = None,
) -> None:
    """Give crowd-leased tasks back to their queues: every pool whose local emulator is gone
    or that is open past its deadline (pool_lifetime_days), or one pool by id."""
    from backend.crowdwork.expiry import expire_pool_now, expire_stale_pools
    from backend.crowdwork.runtime import open_crowd

    settings, crowd, policy = _env()
    with (open_crowd(settings=settings, crowd=crowd, policy=policy) as c,
          toloka_errors(c.runtime.toloka_url)):
        done = ([expire_pool_now(rt=c.runtime, pool_id=pool)] if pool is not None
                else expire_stale_pools(rt=c.runtime))
    if not done:
        console.print("no stale crowd pools")
        return
    for e in done:
        console.print(f"crowd pool {e.pool_id} ({e.queue}) expired: {e.reason}; "
                      f"{e.returned} tasks back to pending")


@crowd_app.command("replay")
def crowd_replay(
    file: Annotated[str, typer.Argument(
        help="recorded answers, CSV or Parquet: item, worker, label[, time][, gold]")],
    seed: Annotated[int, typer.Option(help="shuffles the answers within items")] = 0,
    method: Annotated[str | None, typer.Option(
        help="aggregation (default QUORUM_CROWD_AGGREGATION)")] = None,
    max_rounds: Annotated[int | None, typer.Option(help="stop after this many rounds")] = None,
) -> None:
    """Replay recorded crowd answers through the crowd path with this team's pool settings
    (QUORUM_CROWD_*): accuracy against gold, answers bought per item, control tasks and
    cost, against majority vote over all answers. No database is touched."""
    import warnings

    from backend.crowdwork.settings import get_crowd_settings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # toloka-kit imports pkg_resources
        from crowd.aggregation import METHODS
        from crowd.replay import RecordingError, read_recording, replay

    crowd = get_crowd_settings()
    chosen = method or crowd.aggregation
    if chosen not in METHODS:
        raise ValidationFailed(f"unknown aggregation method {chosen!r}; choose from {METHODS}")
    try:
        recording = read_recording(file)
        config = crowd.crowd_config(aggregation=chosen)
    except (RecordingError, ValueError) as exc:
        raise ValidationFailed(str(exc)) from exc
    with toloka_errors("the replay emulator"):
        r = replay(recording, config=config, seed=seed, golden_share=crowd.golden_rate,
                   golden_min=crowd.golden_min, golden_max=crowd.golden_max,
                   max_rounds=max_rounds).report
    console.print(f"{file}: {r.recorded_answers} answers, {r.items} items, {r.workers} workers; "
                  f"{r.control_tasks} gold items as control tasks, {r.scored_gold} scored; "
                  f"{chosen}, overlap {config.overlap}–{config.max_overlap}, target "
                  f"{config.target_confidence}; {r.rounds} rounds ({r.stopped}), seed {seed}")
    table = Table(title="Replay")
    for col in ("", f"Quorum ({chosen})", "majority vote, all answers"):
        table.add_column(col, justify="right")
    for row in r.rows():
        table.add_row(*row)
    console.print(table)
    console.print(f"accuracy counts the crowd's decisions; {r.to_people_gold:.1%} of the scored "
                  "gold items went to people instead")


@crowd_app.command("status")
def crowd_status() -> None:
    """Crowd pools: state, progress, answers, spend, golden accuracy."""
    from backend.crowdwork.report import pool_rows
    from backend.db import session_scope

    _env()
    with session_scope() as session:
        rows = pool_rows(session=session)
    if not rows:
        console.print("no crowd pools yet")
        return
    table = Table(title="Crowd pools")
    cols = [("id", "id"), ("queue", "queue"), ("kind", "kind"), ("state", "state"),
            ("method", "method"), ("items", "items"), ("decided", "decided"),
            ("to mods", "to_moderators"), ("ties", "ties"),
            ("open", "open"), ("progress", "progress"), ("answers", "answers"),
            ("spend $", "spend"), ("golden acc.", "golden_accuracy")]
    for title, _ in cols:
        table.add_column(title, justify="left" if title in ("queue", "kind", "state")
                         else "right")
    for r in rows:
        table.add_row(*[_fmt(r[k], pct=k in ("progress", "golden_accuracy")) for _, k in cols])
    console.print(table)


def print_report(data: dict[str, Any], out: Console, *, workers: int = 10) -> None:
    if not data["groups"]:
        out.print("no crowd answers yet")
        return
    key = "pool_id" if data["by"] == "pool" else "day"
    table = Table(title=f"Crowd metrics per {data['by']}")
    cols = [(key, key), ("workers", "workers"), ("items", "items"), ("answers", "answers"),
            ("answers/item", "answers_per_item"), ("cost $", "cost"),
            ("$/item", "cost_per_item"), ("median s/item", "median_time_per_item_s"),
            ("golden", "golden_answers"), ("golden acc.", "golden_accuracy"),
            ("agreement", "pairwise_agreement"), ("α", "alpha")]
    for title, _ in cols:
        table.add_column(title, justify="right")
    pct = ("golden_accuracy", "pairwise_agreement")
    for r in [*data["groups"], {**data["overall"], key: "all"}]:
        table.add_row(*[_fmt(r.get(k), pct=k in pct) for _, k in cols])
    out.print(table)
    table = Table(title=f"Workers (lowest golden accuracy first; {data['n_workers']} in all)")
    for col in ("worker", "answers", "golden", "golden acc.", "median s"):
        table.add_column(col, justify="right")
    for w in data["workers"][:workers]:
        table.add_row(str(w["worker"]), str(w["answers"]), str(w["golden_answers"]),
                      _fmt(w["golden_accuracy"], pct=True), _fmt(w["median_time_s"]))
    out.print(table)
    table = Table(title="Dynamic overlap")
    for col in ("pool", "start", "max", "items", "answers/item", "decided on start",
                "saved vs max"):
        table.add_column(col, justify="right")
    for o in data["overlap"]:
        table.add_row(str(o["pool_id"]), str(o["overlap"]), str(o["max_overlap"]),
                      str(o["resolved_items"]), _fmt(o["answers_per_item"]),
                      _fmt(o["decided_on_first_overlap"], pct=True),
                      _fmt(o["saving_vs_max_overlap"], pct=True))
    out.print(table)
    c = data.get("control") or {}
    if c.get("answers") is not None:
        out.print(f"Control tasks: {c['answers']} answers ({_fmt(c['share_of_answers'], pct=True)}"
                  f" of the paid answers, {_fmt(c['per_item'])} per item), ${_fmt(c['cost'])}"
                  f" = {_fmt(c['share_of_spend'], pct=True)} of the spend")
    print_gold(data.get("gold") or {}, out)
    rel = data.get("reliability") or []
    table = Table(title="Stated confidence vs later human verdicts (reliability)")
    for col in ("stated", "decisions", "mean stated", "people agreed", "95% interval"):
        table.add_column(col, justify="right")
    for r in rel:
        table.add_row(str(r["bin"]), str(r["n"]), _fmt(r["stated"]), _fmt(r["right"], pct=True),
                      f"{_fmt(r['low'], pct=True)}–{_fmt(r['high'], pct=True)}")
    if rel:
        out.print(table)
    else:
        out.print("Reliability: no crowd decision has been decided again by a person yet")


def print_gold(g: dict[str, Any], out: Console, *, items: int = 10) -> None:
    """The golden set's coverage (`backend.crowdwork.gold.coverage`)."""
    if not g:
        return
    if not g.get("items_total"):
        out.print("Golden set: no golden items with a known label yet")
        return
    cap = g["exposure_cap"] or "none"
    sources = ", ".join(f"{k} {v}" for k, v in sorted(g["by_source"].items()))
    labels = ", ".join(f"{k} {v}" for k, v in sorted(g["active_by_label"].items()))
    out.print(f"Golden set: {g['active']} active ({labels or 'none'}), {g['retired']} retired, "
              f"{g['never_shown']} active never shown; exposure cap {cap}; sources: {sources}; "
              f"{g['control_answers']} control answers, at most {g['max_exposures']} on one "
              f"item (mean {_fmt(g['mean_exposures'])} on those shown); "
              f"{g['repeat_workers']} times a worker met the same control task again")
    shown = [r for r in g["items"] if r["exposures"]][:items]
    if shown:
        table = Table(title="Golden items, the most exposed first")
        for col in ("item", "label", "state", "source", "exposures", "workers", "pools"):
            table.add_column(col, justify="right")
        for r in shown:
            table.add_row(str(r["item_id"]), str(r["label"]), r["state"], r["source"],
                          str(r["exposures"]), str(r["workers"]), str(r["pools"]))
        out.print(table)


@crowd_app.command("gold")
def crowd_gold_cmd(
    replenish: Annotated[int, typer.Option(
        "--replenish", min=0,
        help="promote up to N items whose verdict two humans agree on to golden items")] = 0,
    items: Annotated[int, typer.Option("--items", min=0, help="golden items listed")] = 10,
) -> None:
    """The golden set: active and retired control tasks, exposures per item, workers who
    saw each; retires what reached the exposure cap; --replenish promotes items decided
    by a moderator with the crowd's majority agreeing, or by two moderators alike."""
    from backend.crowdwork import gold
    from backend.db import session_scope, utcnow
    from crowd.toloka import labels_for

    _, crowd, policy = _env()
    labels = labels_for(policy=[{"key": k} for k in policy.keys])
    now = utcnow()
    with session_scope() as session:
        retired = gold.retire_overexposed(session, cap=crowd.golden_max_exposures, now=now)
        promoted = gold.replenish(session, labels=labels, n=replenish, now=now,
                                  min_crowd_answers=crowd.golden_crowd_min_answers,
                                  crowd_agreement=crowd.golden_crowd_agreement)
        data = gold.coverage(session, cap=crowd.golden_max_exposures)
    if retired:
        console.print(f"retired {len(retired)} golden items past the exposure cap "
                      f"({crowd.golden_max_exposures})")
    if replenish:
        by = ", ".join(f"{k} {v}" for k, v in sorted(
            {s: sum(c.source == s for c in promoted) for s in gold.SOURCES[1:]}.items()))
        console.print(f"promoted {len(promoted)} items to golden items ({by})"
                      if promoted else "no item qualifies: none has a verdict two humans "
                      "agree on (a moderator and the crowd's majority, or two moderators)")
    print_gold(data, console, items=items)


@crowd_app.command("report")
def crowd_report_cmd(
    day: Annotated[bool, typer.Option("--day", help="group by day instead of by pool")] = False,
) -> None:
    """The crowd metrics: participants, items, answers, cost and time per item, golden
    accuracy (overall and per worker), agreement, the effect of dynamic overlap."""
    from backend.crowdwork.report import crowd_report
    from backend.db import session_scope

    _env()
    with session_scope() as session:
        data = crowd_report(session=session, by="day" if day else "pool")
    print_report(data, console)

