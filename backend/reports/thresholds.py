"""The threshold report: one self-contained HTML file (inline CSS, plots as inline PNG,
no external URL) plus the curves as CSV and Parquet.

It shows the latest classifier and similarity calibration runs: precision–recall curves
per label, score histograms per true label, the threshold table (as in the seed: threshold,
precision, recall, accuracy, with "undefined" where nothing is decided), the chosen
cut-offs with their lower bounds or the labels still needed, the current vs the proposed
threshold set, the what-if of the proposed set on today's scores, and the measured
precision of automation from spot checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session

from backend.calibration import service as calibration
from backend.calibration import thresholds
from backend.calibration.settings import CalibrationSettings, get_calibration_settings
from backend.db import utcnow
from backend.policy import Policy, get_policy
from backend.reports import plots
from backend.reports.service import spot_checks
from backend.settings import Settings, get_settings

TEMPLATES = Path(__file__).resolve().parent  # the .html templates ship with the package
GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))


def pct(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "undefined"
    return f"{float(value):.{digits}%}"


_env.filters["pct"] = pct
_env.filters["num"] = lambda v: "–" if v is None else (f"{v:g}" if isinstance(v, float) else v)


@dataclass
class ThresholdReport:
    html: str
    curves: pd.DataFrame
    generated_at: datetime


def _table(curve: pd.DataFrame, points: list[float], *, cal: CalibrationSettings,
           marks: dict[str, float | None] | None = None) -> list[dict[str, Any]]:
    """The threshold table at ``points``: the seed's columns plus the one-sided lower bound
    on precision, the automation share and what people's work costs at the configured
    prices (``people_costs``). Consecutive thresholds that decide the very same items
    (identical counts, hence identical rows) are collapsed into one row with a range."""
    from ml.calibration import counts_at, proportion_bounds

    if curve.empty:
        return []
    t = counts_at(curve, thresholds=sorted(set(points)))
    lower, _ = proportion_bounds(successes=t["tp"].to_numpy(), trials=t["n_auto"].to_numpy(),
                                 confidence=cal.confidence, method=cal.bound_method,  # type: ignore[arg-type]
                                 sided="one")
    rows: list[dict[str, Any]] = []
    for rec, lo in zip(t.to_dict(orient="records"), np.atleast_1d(lower), strict=True):
        key = (int(rec["n_auto"]), int(rec["n_routed"]), int(rec["tp"]))
        if rows and rows[-1]["_key"] == key:
            rows[-1]["threshold_to"] = float(rec["threshold"])
            continue
        n = key[0] + key[1]
        rows.append({"_key": key, "threshold": float(rec["threshold"]), "threshold_to": None,
                     "precision": pct(rec["precision"]), "recall": pct(rec["recall"]),
                     "accuracy": pct(rec["accuracy"]),
                     "lower": pct(None if np.isnan(lo) else float(lo)),
                     "n_auto": key[0], "n_routed": key[1],
                     "automation": pct(key[0] / n if n else None),
                     **people_costs(n_auto=key[0], n_routed=key[1], cal=cal)})
    for r in rows:
        hi = r["threshold"] if r["threshold_to"] is None else r["threshold_to"]
        r["marks"] = [name for name, v in (marks or {}).items()
                      if v is not None and r["threshold"] - 1e-9 <= v <= hi + 1e-9]
        r["threshold_text"] = (f"{r['threshold']:.4g}" if r["threshold_to"] is None
                               else f"{r['threshold']:.4g}–{r['threshold_to']:.4g}")
    return rows


def people_costs(*, n_auto: int, n_routed: int, cal: CalibrationSettings) -> dict[str, float]:
    """People's work at the configured prices: ``routed_*`` what the items sent to people
    cost (one moderator decision, or ``crowd_overlap`` crowd answers, per item) and
    ``avoided_*`` what automating the other items saves."""
    crowd = cal.crowd_cost_per_item * cal.crowd_overlap
    return {"routed_moderators": round(n_routed * cal.moderator_cost_per_item, 4),
            "routed_crowd": round(n_routed * crowd, 4),
            "avoided_moderators": round(n_auto * cal.moderator_cost_per_item, 4),
            "avoided_crowd": round(n_auto * crowd, 4)}


def _classifier_section(run: Any, active: Any, proposed: Any, cal: CalibrationSettings
                        ) -> dict[str, Any]:
    result = run.result or {}
    labels = result.get("labels", {})
    scores = calibration.read_frame(run, "scores")
    curves = {lab: calibration.run_curve(run, lab) for lab in labels}
    marks, tables = {}, {}
    for lab, info in labels.items():
        upper, lower = info["cuts"]
        cur = active.bands.get(lab, {})
        new = (proposed.bands if proposed else active.bands).get(lab, {})
        marks[lab] = [(f"{upper}", new.get(upper, cur.get(upper))),
                      (f"{lower}", new.get(lower, cur.get(lower)))]
        points = [*GRID, *[v for v in (cur.get(upper), cur.get(lower), new.get(upper),
                                       new.get(lower)) if v is not None]]
        tables[lab] = _table(curves[lab], points, cal=cal, marks={
            f"current {upper}": cur.get(upper), f"current {lower}": cur.get(lower),
            **({f"proposed {upper}": new.get(upper), f"proposed {lower}": new.get(lower)}
               if proposed else {})})
    section: dict[str, Any] = {"run": run, "labels": labels, "tables": tables,
                               "model_id": result.get("model_id"),
                               "out_of_fold": result.get("out_of_fold"),
                               "messages": result.get("messages", [])}
    if curves:
        section["pr_png"] = plots.pr_curves(curves, marks={k: [(n, t) for n, t in v
                                                                 if t is not None]
                                                             for k, v in marks.items()})
    if scores is not None and len(scores):
        section["hist_png"] = plots.score_histograms(scores, [c for c in result.get(
            "classes", []) if f"p_{c}" in scores.columns])
    return section


def _similarity_section(run: Any, active: Any, proposed: Any, cal: CalibrationSettings
                        ) -> dict[str, Any]:
    result = run.result or {}
    section: dict[str, Any] = {"run": run, "choice": result.get("reuse_distance"),
                               "messages": result.get("messages", []), "table": []}
    pairs = calibration.read_frame(run, "pairs")
    if pairs is None or pairs.empty:
        return section
    curve = calibration.run_curve(run)
    marks = [(name, t) for name, t in (("current", active.reuse_distance),
                                       ("proposed", proposed.reuse_distance if proposed
                                        else None)) if t is not None]
    points = [*np.round(np.linspace(0.05, 1.0, 20), 2).tolist(), *[t for _, t in marks]]
    section["table"] = _table(curve, points, cal=cal, marks=dict(marks))
    section["png"] = plots.similarity_plot(curve, pairs, marks=marks)
    section["n_pairs"] = len(pairs)
    return section


def build_thresholds_report(*, session: Session, settings: Settings | None = None,
                            cal: CalibrationSettings | None = None,
                            policy: Policy | None = None) -> ThresholdReport:
    settings, cal, policy = settings or get_settings(), cal or get_calibration_settings(), \
        policy or get_policy()
    active = thresholds.active_threshold_set(session=session, policy=policy)
    base = calibration.base_set(session=session, policy=policy)
    proposed = base if base.version != active.version else None
    ctx: dict[str, Any] = {"generated_at": utcnow(), "cal": cal, "active": active,
                           "proposed": proposed, "classifier": None, "similarity": None}
    frames = []
    run = calibration.latest_run(session=session, kind="classifier")
    if run is not None and calibration.read_frame(run, "curves") is not None:
        ctx["classifier"] = _classifier_section(run, active, proposed, cal)
        frames.append(calibration.read_frame(run, "curves").assign(run_id=run.id))
    elif run is not None:
        ctx["classifier_message"] = run.message
    srun = calibration.latest_run(session=session, kind="similarity")
    if srun is not None:
        ctx["similarity"] = _similarity_section(srun, active, proposed, cal)
        curves = calibration.read_frame(srun, "curves")
        if curves is not None:
            frames.append(curves.assign(run_id=srun.id))
    labels = sorted(set(active.bands) | set(proposed.bands if proposed else {}))
    ctx["set_rows"] = [{"label": lab, "current": active.bands.get(lab, {}),
                        "proposed": (proposed.bands.get(lab, {}) if proposed else None)}
                       for lab in labels]
    ctx["band_states"] = [(f"v{active.version} (active)",
                           thresholds.band_states(active, policy=policy))]
    if proposed is not None:
        ctx["band_states"].append((f"v{proposed.version} (proposed)",
                                   thresholds.band_states(proposed, policy=policy)))
    prop_states = {st.key: st for st in ctx["band_states"][1][1]} if proposed else {}
    ctx["side_by_side"] = [{"key": st.key, "current": st, "proposed": prop_states.get(st.key)}
                           for st in ctx["band_states"][0][1]]
    shadow = [st.key for st in ctx["band_states"][0][1] if st.state == "shadow"]
    live = [st.key for st in ctx["band_states"][0][1] if st.state == "live"]
    ctx["shadow_warning"] = (
        f"Active set v{active.version}: {', '.join(shadow)} in shadow (not backed at the "
        f"target); {'only ' + ', '.join(live) if live else 'nothing but rules'} decides "
        "automatically.") if shadow else None
    #: the report's first line: what decides automatically now and what does not
    ctx["lead"] = ctx["shadow_warning"] or (
        f"Active set v{active.version}: {', '.join(live) if live else 'nothing but rules'} "
        "decides automatically, every switched-on band backed at the target.")
    from backend.routing.shadow import shadow_agreement

    ctx["shadow"] = shadow_agreement(session=session).to_dict(orient="records")
    ctx["what_if"] = calibration.what_if(session=session, settings=settings, cal=cal,
                                         policy=policy)
    ctx["what_if_current"] = (calibration.what_if(
        session=session, version=active.version, settings=settings, cal=cal, policy=policy)
        if proposed is not None else None)
    from backend.appeals.service import appeal_rates, recent_appeals

    ctx["recent_appeals"] = recent_appeals(session=session)

    rates = appeal_rates(session=session)
    ctx["appeal_rates"] = [{k: (None if isinstance(v, float) and np.isnan(v) else v)
                            for k, v in r.items()} for r in rates.to_dict(orient="records")]
    checks = spot_checks(session=session, cal=cal, settings=settings)
    ctx["spot_checks"] = checks.to_dict(orient="records") if len(checks) else []
    html = _env.get_template("thresholds.html").render(**ctx, pct=pct)
    curves = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return ThresholdReport(html=html, curves=curves, generated_at=ctx["generated_at"])


def write_thresholds_report(*, session: Session, out_dir: Path | None = None,
                            settings: Settings | None = None,
                            cal: CalibrationSettings | None = None) -> dict[str, Path]:
    """Write ``thresholds.html``, ``thresholds-curves.csv`` and ``.parquet`` under
    ``out_dir`` (default ``data_dir/reports``); the latest runs record the HTML path."""
    settings = settings or get_settings()
    report = build_thresholds_report(session=session, settings=settings, cal=cal)
    out = Path(out_dir or settings.data_dir / "reports")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"html": out / "thresholds.html", "csv": out / "thresholds-curves.csv",
             "parquet": out / "thresholds-curves.parquet"}
    paths["html"].write_text(report.html, encoding="utf-8")
    report.curves.to_csv(paths["csv"], index=False)
    report.curves.to_parquet(paths["parquet"], index=False)
    return paths


def render_page(name: str, **ctx: Any) -> str:
    return _env.get_template(name).render(**ctx, pct=pct)
