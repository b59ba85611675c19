"""The ``quorum`` command line. Every command is one transaction (or one per chunk).

Errors print one sentence on stderr and exit non-zero: 2 bad input, 3 not found,
4 conflict, 5 not allowed, 6 the database is unreachable.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from backend.errors import QuorumError

app = typer.Typer(help="Quorum: human-in-the-loop content moderation.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
rules_app = typer.Typer(help="Rules as data (CEL conditions).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(rules_app, name="rules")
thresholds_app = typer.Typer(help="Versioned threshold sets used by routing.",
                             no_args_is_help=True)
app.add_typer(thresholds_app, name="thresholds")
from backend.calibration.cli import calibrate_app, report_app  # noqa: E402

app.add_typer(calibrate_app, name="calibrate")
app.add_typer(report_app, name="report")
from backend.crowdwork.cli import crowd_app  # noqa: E402

app.add_typer(crowd_app, name="crowd")
from backend.imports.cli import import_app  # noqa: E402

app.add_typer(import_app, name="import")
from backend.hashes.cli import hashes_app  # noqa: E402

app.add_typer(hashes_app, name="hashes")
from backend.users.cli import users_app  # noqa: E402

app.add_typer(users_app, name="users")
from backend.jobs.cli import register as register_jobs  # noqa: E402

register_jobs(app, crowd_app)

console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, soft_wrap=True)


def _settings():  # noqa: ANN202
    from backend.settings import get_settings

    return get_settings()


def _ensure_schema() -> None:
    """Bring the database to the latest migration (idempotent)."""
    from backend.migrate import upgrade

    upgrade(_settings().resolved_database_url)


# ---------------------------------------------------------------- db
@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from backend.migrate import upgrade

    upgrade(_settings().resolved_database_url, revision)
    console.print(f"database at {revision}")


def _confirmed(question: str) -> bool:
    """Ask on the terminal; no answer (no stdin, as in CI) is a no."""
    try:
        return typer.confirm(question, default=False, err=True)
    except (typer.Abort, EOFError):
        err.print("")
        return False


@db_app.command("downgrade")
def db_downgrade(
    revision: str = typer.Argument(..., help="target revision, or 'base'"),
    yes: Annotated[bool, typer.Option("--yes", "-y",
                                      help="do not ask before a downgrade that drops data")
                   ] = False,
) -> None:
    """Revert migrations down to REVISION (SQLite: after a backup into DATA_DIR/backups)."""
    from backend.db import is_sqlite
    from backend.migrate import backup_sqlite, downgrade, pg_dump_hint, plan_downgrade

    settings = _settings()
    url = settings.resolved_database_url
    steps = plan_downgrade(url, revision)
    if not steps:
        console.print(f"database already at {revision}; nothing to do")
        return
    losing = [s for s in steps if s.drops]
    for s in losing:
        title = s.message.strip().splitlines()[0] if s.message.strip() else ""
        err.print(f"undoing {s.revision} ({title}) drops {s.drops}")
    if not is_sqlite(url):
        err.print(pg_dump_hint(url))
    if losing and not yes and not _confirmed(f"downgrade to {revision} and lose that data?"):
        raise QuorumError(f"downgrading to {revision} drops data and was not confirmed, so "
                          "nothing was changed (answer y, or pass --yes)")
    path = url.split("///", 1)[-1]
    if is_sqlite(url) and path and path != ":memory:" and Path(path).exists():
        backup = backup_sqlite(url, settings.data_dir / "backups",
                               label=f"before-downgrade-to-{revision}")
        console.print(f"backup of the database before the downgrade: {backup}")
    downgrade(url, revision)
    console.print(f"database at {revision}")


# ---------------------------------------------------------------- ingest
@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="JSONL, CSV or Parquet file of items")],
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl | csv | parquet")] = None,
    partial: Annotated[bool, typer.Option(help="store the valid rows even if some are bad")
                       ] = False,
    batch: Annotated[int, typer.Option(help="rows per transaction", min=1)] = 10_000,
    wait: Annotated[bool, typer.Option(
        help="route the new items before returning; --no-wait stores them received and "
             "leaves routing to the workers")] = True,
) -> None:
    """Ingest items from a file and route the new ones.

    The whole file is validated first: with a bad row nothing is stored (exit 2) unless
    --partial. Re-running on the same file creates nothing twice.
    """
    from backend.db import refresh_statistics, session_scope, utcnow
    from backend.io import read_rows
    from backend.items.service import ingest as ingest_rows
    from backend.items.service import validate_rows
    from backend.jobs import dispatch
    from backend.policy import get_policy

    _ensure_schema()
    settings, policy = _settings(), get_policy()
    rows = read_rows(file, fmt)
    _, errors = validate_rows(rows, policy=policy)
    if errors and not partial:
        for e in errors[:20]:
            err.print(f"row {e.row}: {e.field or '-'}: {e.message}")
        if len(errors) > 20:
            err.print(f"... and {len(errors) - 20} more")
        raise QuorumError(f"{len(errors)} bad row(s) in {file.name}; nothing was stored "
                          "(fix them, or use --partial to store the valid rows)")
    from backend.items.schemas import AutomationReport
    from backend.routing.pipeline import RoutingSummary

    totals = {"created": 0, "updated": 0, "unchanged": 0, "rejected": 0}
    routed = RoutingSummary()
    for start in range(0, len(rows), batch):
        with session_scope() as session:
            now = utcnow()
            result, created = ingest_rows(session=session, rows=rows[start:start + batch],
                                          policy=policy, partial=True, now=now)
            summary = dispatch.accept(session=session, item_ids=created, now=now,
                                      settings=settings, wait=wait)
        dispatch.after_commit()
        refresh_statistics()  # PostgreSQL: keep the planner's picture of the tables current
        for k in totals:
            totals[k] += getattr(result, k)
        if summary is not None:
            routed.merge(summary)
    console.print(f"{len(rows)} rows: {totals['created']} created, {totals['updated']} updated, "
                  f"{totals['unchanged']} unchanged, {totals['rejected']} rejected")
    if errors:
        for e in errors[:20]:
            err.print(f"rejected row {e.row}: {e.field or '-'}: {e.message}")
    if routed.queued:
        console.print("queued: " + ", ".join(f"{k} {v}" for k, v in sorted(
            routed.queued.items())))
    if wait and totals["created"]:
        report = AutomationReport.of(routed, routing=totals["created"])
        for line in report.lines():
            if not line.startswith("to people:"):  # printed above as "queued:"
                console.print(line)
    if not wait and totals["created"]:
        console.print(f"{totals['created']} item(s) received; routing is queued for the "
                      "workers (quorum worker)")


# ---------------------------------------------------------------- queues
def print_queue_table(day: date | None = None, title: str = "Queues") -> None:
    from backend.tables import queue_table

    console.print(queue_table(day, title))


@app.command()
def queues(day: Annotated[str | None, typer.Option(help="YYYY-MM-DD; default: every day")]
           = None) -> None:
    """Print the daily queues like the seed's table: title, priority, progress."""
    _ensure_schema()
    try:
        d = date.fromisoformat(day) if day else None
    except ValueError as exc:
        raise QuorumError(f"--day must be YYYY-MM-DD, not {day!r}") from exc
    print_queue_table(d)
    _print_capacity()


def _print_capacity(moved_now: int | None = None) -> None:
    from backend.db import session_scope, utcnow
    from backend.queues.overflow import capacity

    settings = _settings()
    if settings.moderator_daily_capacity <= 0:
        return
    with session_scope() as session:
        c = capacity(session=session, settings=settings, now=utcnow())
    line = (f"moderators today: {c.done_today} done, {c.held} held, "
            f"{c.fixed_pending + c.overflowable_pending} waiting, capacity {c.capacity}; "
            f"{c.moved_today} moved to {settings.moderator_overflow_kind} today")
    if moved_now is not None:
        line += f" ({moved_now} just now)"
    console.print(line)


@app.command()
def overflow() -> None:
    """Move what moderators cannot work today (QUORUM_MODERATOR_DAILY_CAPACITY) to the
    crowd now, the lowest expected value first; the periodic job does it on its own."""
    from backend.db import session_scope, utcnow
    from backend.queues.overflow import rebalance

    _ensure_schema()
    settings = _settings()
    if settings.moderator_daily_capacity <= 0:
        raise QuorumError("QUORUM_MODERATOR_DAILY_CAPACITY is 0 (no limit): nothing "
                          "overflows; set it to the tasks moderators work in a day")
    with session_scope() as session:
        moved = rebalance(session=session, settings=settings, now=utcnow()).moved_now
    _print_capacity(moved_now=moved)


@app.command("expire-leases")
def expire_leases_cmd() -> None:
    """Return every expired lease to its queue now (leasing does this on the fly too)."""
    from backend.db import session_scope, utcnow
    from backend.queues.service import expire_leases

    _ensure_schema()
    with session_scope() as session:
        n = expire_leases(session=session, now=utcnow())
    console.print(f"{n} expired lease(s) returned")


# ---------------------------------------------------------------- rules
@rules_app.command("load")
def rules_load(file: Annotated[Path, typer.Argument(help="YAML file of rules")]) -> None:
    """Create or update rules from YAML; one bad rule refuses the file."""
    from backend.db import session_scope
    from backend.policy import get_policy
    from backend.rules.service import load_rules_file

    _ensure_schema()
    try:
        with session_scope() as session:
            report = load_rules_file(session=session, path=file, policy=get_policy())
    except QuorumError as exc:
        for line in exc.details or []:
            err.print(str(line))
        raise
    console.print(", ".join(f"{len(v)} {k}" for k, v in report.items()))


@rules_app.command("list")
def rules_list() -> None:
    """List rules in evaluation order with their hit counts."""
    from backend.db import session_scope
    from backend.routing.replay import rule_set_version
    from backend.rules.service import list_rules

    _ensure_schema()
    with session_scope() as session:
        rs_version = rule_set_version(session=session)
    table = Table(title=f"Rules (rule set v{rs_version}: `quorum replay --rules vN` replays "
                        "an earlier one)")
    for col in ("pos", "name", "v", "mode", "action", "target", "hits", "shadow", "condition"):
        table.add_column(col)
    with session_scope() as session:
        for r in list_rules(session=session):
            target = r.label or r.queue_kind or r.tag or ""
            table.add_row(str(r.position), r.name, str(r.version), r.mode, r.action, target,
                          str(r.hits), str(r.shadow_hits), r.expression)
    console.print(table)


@rules_app.command("backtest")
def rules_backtest(name: str, limit: Annotated[int | None, typer.Option()] = None) -> None:
    """Run rule NAME over the stored items; compare its hits with human verdicts."""
    from backend.db import session_scope
    from backend.rules.service import backtest, get_rule

    _ensure_schema()
    with session_scope() as session:
        rule = get_rule(session=session, name_or_id=name)
        res = backtest(session=session, rule=rule, limit=limit)
    console.print(f"rule {res.rule} v{res.version}: {res.hits} hits of {res.items_scanned} "
                  f"items ({res.hit_rate:.1%})")
    console.print(f"hits with a human verdict: {res.with_human_verdict} "
                  + (f"{dict(sorted(res.human_labels.items()))}" if res.human_labels else ""))
    if res.agree is not None:
        prec = "undefined" if res.precision is None else f"{res.precision:.1%}"
        if res.precision is not None and res.precision_lower is not None:
            prec += (f" ({res.confidence:.0%} interval {res.precision_lower:.1%}–"
                     f"{res.precision_upper:.1%}, {res.interval_method}, on {res.labelled} "
                     "labelled hits)")
        console.print(f"agree with the rule's label: {res.agree}, disagree: {res.disagree}, "
                      f"precision: {prec}")
    for warning in res.warnings:
        console.print(f"warning: {warning}", markup=False)


# ---------------------------------------------------------------- ml
@app.command()
def embed(
    batch: Annotated[int, typer.Option(help="items per transaction")] = 512,
    limit: Annotated[int | None, typer.Option(help="stop after N items")] = None,
) -> None:
    """Back-fill embeddings for items that have none for the current encoder, then grow
    the neighbour index with the items that have human verdicts."""
    from sqlalchemy import select
    from tqdm import tqdm

    from backend.db import session_scope
    from backend.items.models import Item, ItemEmbedding
    from backend.ml_adapter.service import ensure_embeddings, get_encoder, get_store, sync_index
    from backend.ml_adapter.settings import get_ml_settings

    _ensure_schema()
    ml = get_ml_settings()
    encoder = get_encoder(ml)
    with session_scope() as session:
        done = select(ItemEmbedding.item_id).where(ItemEmbedding.encoder_id == encoder.encoder_id)
        todo = list(session.scalars(select(Item.id).where(Item.id.not_in(done))
                                    .order_by(Item.id)))
    if limit:
        todo = todo[:limit]
    with tqdm(total=len(todo), desc=f"embedding ({encoder.encoder_id})", unit="item") as bar:
        for start in range(0, len(todo), batch):
            ids = todo[start:start + batch]
            with session_scope() as session:
                rows = [r._asdict() for r in session.execute(
                    select(Item.id, Item.title, Item.description, Item.image)
                    .where(Item.id.in_(ids)))]
                ensure_embeddings(session=session, rows=rows, encoder=encoder,
                                  batch_size=ml.batch_size)
            bar.update(len(ids))
    with session_scope() as session:
        added = sync_index(session=session, encoder=encoder,
                           store=get_store(encoder=encoder, ml=ml, session=session))
    console.print(f"embedded {len(todo)} item(s); {added} added to the neighbour index")


@app.command()
def train(refit: Annotated[bool, typer.Option(
        "--refit", help="after the held-out evaluation, fit the deployed model on all "
        "labels")] = False,
          families: Annotated[str | None, typer.Option(
              "--families",
              help="candidate classifier families, comma-separated: embedding, text_stack, "
                   "minilm_finetune, or auto (default QUORUM_ML_FAMILIES: all on CUDA, "
                   "the first two on a CPU); the one that backs most automation out of "
                   "fold wins")] = None) -> None:
    """Train the classifier on final human verdicts and make it the newest model (it
    decides once a calibration run backs a threshold set for it and that set is applied)."""
    from backend.db import session_scope
    from backend.ml_adapter.service import train as train_model

    _ensure_schema()
    with session_scope() as session:
        art = train_model(session=session, refit=refit, families=families)
        m = art.metrics
    console.print(f"classifier v{art.version} ({art.encoder_id}) trained on {art.train_size} "
                  f"items{' (refit on all labels)' if refit else ''}; held-out "
                  f"{m.get('held_out')}: accuracy {m.get('accuracy', 0):.3f}, "
                  f"macro-F1 {m.get('macro_f1', 0):.3f}; saved to {art.path}")
    fam = m.get("family_selection") or {}
    if fam:
        console.print(f"family {fam['chosen']}, out-of-fold backed automation at "
                      f"{fam['target_precision']:.0%}: " + ", ".join(
                          f"{k} {v['auto_share']:.1%}" for k, v in fam["families"].items()
                          if "auto_share" in v))
        for k, v in fam["families"].items():
            if "skipped" in v:
                console.print(f"family {k} not scored: {v['skipped']}")
    console.print(f"classifier-v{art.version} scores in shadow until a threshold set "
                  "calibrated for it is applied: run `quorum calibrate classifier`, then "
                  "`quorum thresholds apply`")


@thresholds_app.command("list")
def thresholds_list() -> None:
    """List threshold sets (active, proposed, retired), the active set's bands and the
    hash distances, each live / shadow / off with the bound behind it."""
    from backend.calibration import thresholds
    from backend.db import session_scope
    from backend.hashes.service import hash_states
    from backend.policy import get_policy

    _ensure_schema()
    policy = get_policy()
    table = Table(title="Threshold sets")
    for col in ("version", "state", "calibrated for", "reuse distance", "auto-decide", "bands",
                "note"):
        table.add_column(col)
    states = Table(title="Deciding bands of the active set (live decides; shadow records "
                         "what it would decide and routes to people)")
    for col in ("band", "value", "state", "lower bound", "labels", "why"):
        states.add_column(col)
    with session_scope() as session:
        active = thresholds.active_threshold_set(session=session, policy=policy)
        for ts in thresholds.list_sets(session=session):
            bands = "; ".join(f"{k} " + "/".join(f"{v:g}" for v in cuts.values())
                              for k, cuts in ts.bands.items())
            live = [s.key for s in thresholds.band_states(ts, policy=policy)
                    if s.state == "live"]
            table.add_row(str(ts.version), ts.state, ts.model_id or "nothing (defaults)",
                          f"{ts.reuse_distance}", ", ".join(ts.auto_decide), bands,
                          (ts.note or "") + f" [live: {', '.join(live) or 'none'}]")
        for st in thresholds.band_states(active, policy=policy):
            states.add_row(st.key, "off" if st.value is None else f"{st.value:g}", st.state,
                           "–" if st.lower is None else f"{st.lower:.2%}",
                           "–" if st.n_auto is None else f"{st.n_auto} of {st.n_labelled}",
                           st.reason)
        hashed = Table(title="Hash distances (Hamming bits of 256; not versioned with the "
                             "sets: `quorum hashes calibrate`)")
        for col in ("distance", "label", "bits", "state", "lower bound", "labels", "why"):
            hashed.add_column(col)
        for st in hash_states(session=session):
            hashed.add_row(st.key, st.label or "–", f"{st.value:g}", st.state,
                           "–" if st.lower is None else f"{st.lower:.2%}",
                           "–" if st.n_auto is None else f"{st.n_auto} of {st.n_labelled}",
                           st.reason)
    console.print(table)
    console.print(states)
    console.print(hashed)


@thresholds_app.command("edit")
def thresholds_edit(
    version: int,
    cut: Annotated[list[str] | None, typer.Option(
        "--cut", help="LABEL.CUT=VALUE, e.g. ok.auto=0.99 (repeatable)")] = None,
    reuse_distance: Annotated[str | None, typer.Option(
        "--reuse-distance", help="cosine distance, or 'off'")] = None,
    auto_decide: Annotated[str | None, typer.Option(
        "--auto-decide", help="comma-separated bands that may decide (e.g. "
        "auto_ok,ML_BAD_HIGH); '' for none")] = None,
    note: Annotated[str | None, typer.Option("--note")] = None,
) -> None:
    """Propose a new threshold set edited from VERSION (validated; a changed cut-off stays
    backed only where its calibration curve backs the new value; audited)."""
    from backend.calibration import thresholds
    from backend.calibration.editing import edit_set
    from backend.db import session_scope
    from backend.errors import ValidationFailed
    from backend.policy import get_policy
    from backend.users.service import audit

    _ensure_schema()
    cuts: dict[str, float] = {}
    for item in cut or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValidationFailed(f"--cut {item!r}: expected LABEL.CUT=VALUE")
        try:
            cuts[key.strip()] = float(value)
        except ValueError as exc:
            raise ValidationFailed(f"--cut {item!r}: {value!r} is not a number") from exc
    extra: dict[str, Any] = {}
    if reuse_distance is not None:
        extra["reuse_distance"] = None if reuse_distance.lower() == "off" else reuse_distance
    if auto_decide is not None:
        extra["auto_decide"] = [b.strip() for b in auto_decide.split(",") if b.strip()]
    policy = get_policy()
    with session_scope() as session:
        thresholds.active_threshold_set(session=session, policy=policy)
        ts = edit_set(session=session, policy=policy, version=version, cuts=cuts, note=note,
                      **extra)
        audit(session=session, user=None, action="thresholds.edit",
              target_type="threshold_set", target_id=ts.version,
              details={"from": version, "cuts": cuts, **extra, "via": "cli"})
        shadow = [s.key for s in thresholds.band_states(ts, policy=policy)
                  if s.state == "shadow"]
    console.print(f"proposed threshold set v{ts.version} (edited from v{version}); in shadow: "
                  f"{', '.join(shadow) or 'none'}; apply it with `quorum thresholds apply "
                  f"{ts.version}`")


@thresholds_app.command("apply")
def thresholds_apply(version: int) -> None:
    """Make threshold set VERSION active (also restores an earlier one)."""
    from backend.calibration import thresholds
    from backend.db import session_scope, utcnow
    from backend.policy import get_policy

    _ensure_schema()
    with session_scope() as session:
        _, previous = thresholds.apply_set(session=session, policy=get_policy(),
                                           version=version, via="cli", now=utcnow())
    if previous == version:
        console.print(f"threshold set v{version} was already active: nothing changed")
        return
    console.print(f"threshold set v{version} is active (was v{previous}); routing uses it "
                  "from the next item")


@app.command()
def replay(
    since: Annotated[str, typer.Option("--since", help="items created from this day "
                                       "(YYYY-MM-DD) or time (ISO 8601, UTC if naive)")],
    thresholds_version: Annotated[str | None, typer.Option(
        "--thresholds", help="threshold set version, e.g. v4 (default: the active set)")]
    = None,
    rules_version: Annotated[str | None, typer.Option(
        "--rules", help="rule-set version, e.g. v12 (`quorum rules list` shows the current "
                        "one; default: today's rules)")] = None,
    rules_file: Annotated[Path | None, typer.Option(
        "--rules-file", help="a candidate rules YAML (as for `quorum rules load`), not yet "
                             "loaded: replayed on top of the rules, then rolled back")]
    = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="classifier-vN or zero-shot (default: the champion)")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="CSV of every replayed item (default DATA_DIR/reports/replay.csv); "
                      "the summary by source and label goes beside it (.summary.csv)")]
    = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1,
                                              help="at most N items")] = None,
) -> None:
    """Re-run the pipeline on stored items (writes nothing) with another threshold set,
    rule set and/or model, and print what would change: outcomes flipped, by source and
    label, and the precision of automatic outcomes against human verdicts (with an
    interval)."""
    from datetime import UTC, datetime

    from backend.db import session_scope, utcnow
    from backend.routing.replay import parse_version
    from backend.routing.replay import replay as run_replay

    _ensure_schema()
    try:
        when = datetime.fromisoformat(since)
    except ValueError as exc:
        raise QuorumError(f"--since must be YYYY-MM-DD or an ISO 8601 time, not {since!r}"
                          ) from exc
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    ts_version = parse_version(thresholds_version, "--thresholds")
    rs_version = parse_version(rules_version, "--rules")
    settings = _settings()
    if rules_file is not None and not rules_file.is_file():
        raise QuorumError(f"--rules-file {rules_file} is not a file")
    try:
        with session_scope() as session:
            result = run_replay(session=session, since=when, settings=settings, now=utcnow(),
                                thresholds_version=ts_version, rules_version=rs_version,
                                model_id=model, limit=limit, rules_file=rules_file)
    except QuorumError as exc:
        for line in exc.details or []:
            err.print(str(line))
        raise
    path = out or settings.data_dir / "reports" / "replay.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    result.rows.to_csv(path, index=False)
    summary = result.by_source_label()
    summary_path = path.with_suffix(".summary.csv")
    summary.to_csv(summary_path, index=False)
    rows = result.rows
    what = [f"threshold set v{result.thresholds_version}"]
    if result.rules_version is not None:
        what.append(f"rule set v{result.rules_version}")
    if result.rules_file is not None:
        loaded = result.rules_loaded or {}
        what.append(f"candidate rules {result.rules_file} ("
                    + ", ".join(f"{len(v)} {k}" for k, v in loaded.items()) + ")")
    if result.model_id is not None:
        what.append(f"model {result.model_id}")
    console.print(f"replayed {len(rows)} item(s) created since {when:%Y-%m-%d %H:%M} with "
                  f"{', '.join(what)}: {int(rows['changed'].sum())} would change")
    table = Table(title="What would change (before → after)")
    for col in ("before", "after", "items"):
        table.add_column(col)
    for (b, a), n in result.changes.most_common(30):
        table.add_row(str(b or "-"), str(a or "-"), str(n))
    console.print(table)
    if len(summary):
        by = Table(title="Automatic decisions by source and label (precision against "
                         f"human verdicts, {result.confidence:.0%} interval)")
        for col in ("source", "label", "before", "after", "gained", "lost", "shadow",
                    "judged", "precision"):
            by.add_column(col, justify="left" if col in ("source", "label") else "right")
        for r in summary.to_dict(orient="records"):
            prec = ("-" if r["precision"] is None else
                    f"{r['precision']:.1%} [{r['precision_low']:.1%}, "
                    f"{r['precision_high']:.1%}]")
            by.add_row(r["source"], r["label"], str(r["before"]), str(r["after"]),
                       str(r["gained"]), str(r["lost"]), str(r["shadow"]), str(r["judged"]),
                       prec)
        console.print(by)
    for column in ("before", "after"):
        right, judged = result.precision(column)
        p, lo, hi = result.interval(column)
        auto = int(rows[column].map(lambda o: isinstance(o, str) and not o.startswith(
            "queue:")).sum())
        console.print(f"{column}: {auto} decided automatically; against {judged} human "
                      "verdicts: " + (f"{p:.1%} right [{lo:.1%}, {hi:.1%}]"
                                      if judged and p is not None else "nothing to compare"))
    n_shadow = int(rows["shadow"].notna().sum())
    if n_shadow:
        console.print(f"in shadow: {n_shadow} item(s) an unbacked stage would have decided "
                      "(column shadow)")
    console.print(f"every item: {path}; by source and label: {summary_path}")


# ---------------------------------------------------------------- demo
@app.command()
def demo(
    items: Annotated[int, typer.Option(help="synthetic items to generate")] = 3000,
    seed: Annotated[int, typer.Option()] = 7,
    moderated: Annotated[int, typer.Option(help="tasks simulated moderators work")] = 300,
    fresh: Annotated[bool, typer.Option(help="start from an empty database")] = True,
) -> None:
    """Run the whole loop on the embedded default (SQLite), offline, and print a summary."""
    from backend.demo import run_demo

    run_demo(n_items=items, seed=seed, moderated=moderated, fresh=fresh, console=console)


def main() -> None:
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError
    from sqlalchemy.exc import OperationalError

    try:
        app()
    except QuorumError as exc:
        err.print(f"error: {exc.message}")
        sys.exit(exc.exit_code)
    except OperationalError as exc:
        err.print(f"error: the database is unreachable or locked ({exc.orig})")
        sys.exit(6)
    except (CommandError, RevisionError) as exc:  # unknown revision; database ahead of code
        err.print(f"error: migrations: {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
