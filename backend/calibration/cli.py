"""``quorum calibrate ...`` and ``quorum report ...`` (registered in ``backend.cli``)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

calibrate_app = typer.Typer(help="Re-choose thresholds from human verdicts (precision with "
                            "confidence).", no_args_is_help=True)
report_app = typer.Typer(help="Reports for analysts (HTML, CSV, Parquet).", no_args_is_help=True)

Target = Annotated[float | None, typer.Option(
    "--target", help="target precision (default QUORUM_CALIBRATION_TARGET_PRECISION, or "
    "..._REUSE_TARGET_PRECISION for similarity)")]
Confidence = Annotated[float | None, typer.Option(
    "--confidence", help="confidence of the lower bound (default "
    "QUORUM_CALIBRATION_CONFIDENCE)")]


def _console():  # noqa: ANN202
    from backend.cli import console

    return console


def _pct(v: Any) -> str:
    return "undefined" if v is None else f"{v:.1%}"


def print_run(run: Any) -> None:
    """The chosen thresholds with their lower bounds, or the labels still needed."""
    console = _console()
    result = run.result or {}
    console.print(f"calibration run {run.id} ({run.kind}): {run.labelled_count} labelled "
                  + ("pairs" if run.kind == "similarity" else "items")
                  + (f"; scores of {result['model_id']}" if result.get("model_id") else "")
                  + (" (out of fold)" if result.get("out_of_fold") else ""))
    table = Table()
    for col in ("label", "cut-off", "current", "chosen", "precision", "lower bound", "recall",
                "decided", "labels needed"):
        table.add_column(col)
    rows = []
    for label, info in result.get("labels", {}).items():
        for cut in info["cuts"]:
            rows.append((label, cut, info["current"].get(cut), info[cut]))
    if result.get("reuse_distance"):
        rows.append(("similarity", "reuse distance", result.get("current"),
                     result["reuse_distance"]))
    for label, cut, current, ch in rows:
        table.add_row(label, cut, f"{current}", "not backed" if ch["threshold"] is None
                      else f"{ch['threshold']:.4g}", _pct(ch["precision"]),
                      _pct(ch["precision_lower"]), _pct(ch["recall"]),
                      f"{ch['n_auto']}/{ch['n_labelled']}",
                      "" if ch["threshold"] is not None else str(ch["labels_needed"] or
                                                                 "more won't help"))
    if rows:
        console.print(table)
    for message in result.get("messages", []):
        console.print(f"  {message}")
    if result.get("proposed_version"):
        v = result["proposed_version"]
        console.print(f"proposed threshold set v{v}: review it with `quorum report "
                      f"thresholds`, apply it with `quorum thresholds apply {v}`")
    else:
        console.print(f"nothing proposed: {run.message}")


def _run(kind: str, overrides: dict[str, Any]) -> None:
    from backend.calibration.service import run_calibration
    from backend.cli import _ensure_schema
    from backend.db import session_scope, utcnow

    _ensure_schema()
    with session_scope() as session:
        run = run_calibration(session=session, kind=kind, now=utcnow(), overrides=overrides)
        print_run(run)


@calibrate_app.command("classifier")
def calibrate_classifier(
    target: Target = None,
    routing_target: Annotated[float | None, typer.Option(
        "--routing-target", help="target precision of the routing bands")] = None,
    confidence: Confidence = None,
    method: Annotated[str | None, typer.Option(
        "--method", help="wilson | clopper-pearson")] = None,
    objective: Annotated[str | None, typer.Option(
        "--objective", help="max_automation | f_beta | cost")] = None,
) -> None:
    """Calibrate the classifier bands on the items with final human verdicts and propose
    a threshold set if anything can be backed."""
    _run("classifier", {"target_precision": target, "routing_target_precision": routing_target,
                        "confidence": confidence, "bound_method": method,
                        "objective": objective})


@calibrate_app.command("similarity")
def calibrate_similarity(target: Target = None, confidence: Confidence = None) -> None:
    """Calibrate the reuse distance on the answered pair tasks (majority vote)."""
    _run("similarity", {"reuse_target_precision": target, "confidence": confidence})


@calibrate_app.command("pairs")
def calibrate_pairs(n: Annotated[int | None, typer.Option(
        "--n", help="pairs to sample (default QUORUM_CALIBRATION_PAIR_SAMPLE_SIZE)")] = None
                    ) -> None:
    """Queue pair tasks ("same decision?") around the current reuse distance."""
    from backend.calibration.service import sample_pair_tasks
    from backend.calibration.settings import get_calibration_settings
    from backend.cli import _ensure_schema
    from backend.db import session_scope, utcnow

    _ensure_schema()
    cal = get_calibration_settings()
    with session_scope() as session:
        sample = sample_pair_tasks(session=session, n=n, now=utcnow())
    _console().print(f"queued {len(sample.task_ids)} pair task(s) in {cal.pair_queue_kind} "
                     f"({cal.pair_audience}, {cal.pair_overlap} answers each)")
    if sample.message:
        _console().print(f"  {sample.message}")


@calibrate_app.command("what-if")
def calibrate_what_if(version: Annotated[int | None, typer.Option(
        "--version", help="threshold set (default: the newest proposal, else the active)")]
                      = None) -> None:
    """Tomorrow's expected queue sizes, precision of automation and crowd cost at a
    threshold set, from today's scores."""
    from backend.calibration.service import what_if
    from backend.cli import _ensure_schema
    from backend.db import session_scope

    _ensure_schema()
    with session_scope() as session:
        w = what_if(session=session, version=version)
    console = _console()
    if w["message"]:
        console.print(f"threshold set v{w['version']}: {w['message']}")
        return
    table = Table(title=f"What-if: threshold set v{w['version']} ({w['state']}) on "
                        f"{w['day']}'s scores")
    for col in ("label", "band", "threshold", "automatic", "items", "precision", "interval"):
        table.add_column(col)
    for r in w["labels"]:
        table.add_row(r["label"], r["band"], f"{r['threshold']:g}", "yes" if r["auto"] else "no",
                      str(r["n_items"]), _pct(r["precision"]),
                      f"{_pct(r['precision_lower'])}–{_pct(r['precision_upper'])}")
    console.print(table)
    console.print("expected queues: " + ", ".join(f"{b} {n}" for b, n in w["bands"].items()))
    console.print(f"{w['n_items']} items: {w['n_auto']} automatic, {w['n_routed']} to people; "
                  f"precision of automation {_pct(w['auto_precision'])} "
                  f"({_pct(w['auto_precision_lower'])}–{_pct(w['auto_precision_upper'])}); "
                  f"crowd cost {w['crowd_cost']:.2f}")


@report_app.command("thresholds")
def report_thresholds(out: Annotated[Path | None, typer.Option(
        "--out", help="directory (default DATA_DIR/reports)")] = None) -> None:
    """Write the self-contained HTML threshold report and the curves (CSV, Parquet)."""
    from backend.cli import _ensure_schema
    from backend.db import session_scope
    from backend.reports.thresholds import write_thresholds_report

    _ensure_schema()
    with session_scope() as session:
        paths = write_thresholds_report(session=session, out_dir=out)
    console = _console()
    console.print(f"threshold report: {paths['html']}")
    console.print(f"curves: {paths['csv']}, {paths['parquet']}")
    console.print(f"open it with `xdg-open {paths['html']}` (or in any browser; no server "
                  "needed)")


@report_app.command("daily")
def report_daily(day: Annotated[str | None, typer.Option(
        "--day", help="YYYY-MM-DD (default: the last day with decisions)")] = None,
        source: Annotated[str | None, typer.Option(
            "--source", help="only the items of this platform source (the items' "
                             "`source` field)")] = None) -> None:
    """The class mix per subset (% per label) and decisions by source, for one day."""
    from backend.cli import _ensure_schema
    from backend.db import session_scope
    from backend.errors import ValidationFailed
    from backend.reports.service import daily_report, latest_decision_day

    _ensure_schema()
    try:
        when = date.fromisoformat(day) if day else None
    except ValueError as exc:
        raise ValidationFailed("--day must be YYYY-MM-DD") from exc
    with session_scope() as session:
        when = when or latest_decision_day(session=session) or date.today()
        report = daily_report(session=session, day=when, source=source)
    console = _console()
    of = f" from {source}" if source else ""
    decided = int(report.class_mix["n"].sum()) if len(report.class_mix) else 0
    if decided == 0:
        # an empty day says so (not a table of 0.0% that "adds up to 100%")
        console.print(f"No item{of} was decided on {report.day}: there is no class mix to "
                      "show. Pick another day with --day YYYY-MM-DD.")
        return
    table = Table(title=f"Class mix of the items{of} decided on {report.day} (%)")
    table.add_column("subset")
    table.add_column("items", justify="right")
    for lab in report.labels:
        table.add_column(lab, justify="right")
    for r in report.class_mix.to_dict(orient="records"):
        table.add_row(r["subset"], str(r["n"]), *[f"{r[lab]:.1f}" for lab in report.labels])
    console.print(table)
    src = Table(title=f"Decisions{of} by source (who decided)")
    for col in ("source", "decisions", "%"):
        src.add_column(col)
    for r in report.by_source.to_dict(orient="records"):
        src.add_row(r["source"], str(r["decisions"]), f"{r['share']:.1f}")
    console.print(src)
