"""Replay: re-run the pipeline on stored items with alternatives and say what would change.

``replay`` routes the items ingested since a time again — rules, hash banks, similarity,
classifier — with the active rule set, threshold set and model or with others, inside a
savepoint that is rolled back: nothing is written (no event, task, score or shadow row
stays). The alternatives:

- ``thresholds_version``: another threshold set (applied inside the savepoint);
- ``rules_version``: the rule set as it stood after its ``N``-th recorded change
  (``rule_versions`` in order; :func:`rule_set_version` is the current one): each rule
  takes its definition of then, rules created later are off;
- ``rules_file``: a candidate rules YAML (the format of ``quorum rules load``) not yet
  loaded: inside the savepoint it is loaded on top of the rule set (today's, or
  ``rules_version``'s) exactly as ``load_rules_file`` would load it — created and updated
  rules, each checked first; one bad rule refuses the replay with the file's problems;
- ``model_id``: another trained classifier (``classifier-vN``, or ``zero-shot``) as the
  champion. Safe by default still holds: its bands decide only where the threshold set
  was backed for that model; elsewhere they run in shadow, and replay reports what the
  stages in shadow would have decided (``shadow``: ``source:label`` of each, in pipeline
  order, ``;``-separated) beside what would be decided (``after``).

Per item it compares the stored outcome (its first automatic decision, else the queue
its first task went to) with the replayed one, and scores both against the human
verdict where there is one. The neighbour index never offers an item its own verdict.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.decisions.models import AUTOMATIC_SOURCES, DecisionEvent, ItemStatus
from backend.errors import NotFound, ValidationFailed
from backend.items.models import Item
from backend.queues.models import Queue, Task
from backend.routing.hooks import PipelineHooks
from backend.routing.models import ShadowOutcome
from backend.settings import Settings

COLUMNS = ["item_id", "source", "external_id", "before", "after", "changed", "shadow",
           "human_label", "before_right", "after_right"]
SUMMARY_COLUMNS = ["source", "label", "before", "after", "gained", "lost", "shadow",
                   "judged", "right", "precision", "precision_low", "precision_high"]


@dataclass
class ReplayResult:
    rows: pd.DataFrame  # COLUMNS, one row per replayed item
    thresholds_version: int
    since: datetime
    rules_version: int | None = None
    model_id: str | None = None
    confidence: float = 0.95
    #: the candidate rules file replayed, and what loading it did inside the savepoint
    #: (``created`` / ``updated`` / ``unchanged`` rule names)
    rules_file: str | None = None
    rules_loaded: dict[str, list[str]] | None = None

    @property
    def changes(self) -> Counter[tuple[str, str]]:
        changed = self.rows[self.rows["changed"]]
        return Counter(zip(changed["before"].fillna(""), changed["after"].fillna(""),
                           strict=True))

    def precision(self, column: str) -> tuple[int, int]:
        """(right, judged) of the automatic outcomes in ``before`` / ``after`` that have a
        human verdict to compare with."""
        auto = self.rows[self.rows[column].map(_is_automatic)
                         & self.rows["human_label"].notna()]
        return int(auto[f"{column}_right"].sum()), len(auto)

    def interval(self, column: str) -> tuple[float | None, float | None, float | None]:
        """Precision of ``column``'s automatic outcomes and its two-sided Wilson interval
        at ``confidence`` (None where nothing is judged)."""
        return _wilson(*self.precision(column), self.confidence)

    def by_source_label(self) -> pd.DataFrame:
        """Per automatic ``source`` and ``label``: decided before / after, gained (after
        but not before) and lost, what stages in shadow would have decided, and the
        precision of ``after`` against human verdicts with its interval."""
        rows = self.rows
        shadows = rows["shadow"].map(lambda s: s.split(";") if isinstance(s, str) else [])
        keys = sorted({o for col in ("before", "after") for o in rows[col] if _is_automatic(o)}
                      | {o for found in shadows for o in found})
        out = []
        for key in keys:
            source, label = key.split(":", 1)
            b, a = rows["before"] == key, rows["after"] == key
            judged = a & rows["human_label"].notna()
            right = int((judged & (rows["human_label"] == label)).sum())
            p, lo, hi = _wilson(right, int(judged.sum()), self.confidence)
            out.append({"source": source, "label": label, "before": int(b.sum()),
                        "after": int(a.sum()), "gained": int((a & ~b).sum()),
                        "lost": int((b & ~a).sum()),
                        "shadow": int(shadows.map(lambda found, k=key: k in found).sum()),
                        "judged": int(judged.sum()), "right": right, "precision": p,
                        "precision_low": lo, "precision_high": hi})
        return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


def _wilson(right: int, judged: int, confidence: float
            ) -> tuple[float | None, float | None, float | None]:
    if not judged:
        return None, None, None
    from ml.calibration_bounds import wilson_bounds

    lo, hi = wilson_bounds(successes=[right], trials=[judged], confidence=confidence)
    return right / judged, float(lo[0]), float(hi[0])


def _is_automatic(outcome: Any) -> bool:
    return isinstance(outcome, str) and outcome.split(":", 1)[0] in AUTOMATIC_SOURCES


def _stored_outcomes(session: Session, ids: list[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        first_auto = select(func.min(DecisionEvent.id)).where(
            DecisionEvent.item_id.in_(chunk),
            DecisionEvent.source.in_(AUTOMATIC_SOURCES)).group_by(DecisionEvent.item_id)
        for item_id, source, label in session.execute(select(
                DecisionEvent.item_id, DecisionEvent.source, DecisionEvent.label)
                .where(DecisionEvent.id.in_(first_auto))):
            out[item_id] = f"{source}:{label}"
        first_task = select(func.min(Task.id)).where(
            Task.item_id.in_(chunk), Task.task_type == "item").group_by(Task.item_id)
        for item_id, kind in session.execute(select(Task.item_id, Queue.kind).join(
                Queue, Queue.id == Task.queue_id).where(Task.id.in_(first_task))):
            out.setdefault(item_id, f"queue:{kind}")
    return out


# ---------------------------------------------------------------- alternatives
def rule_set_version(*, session: Session) -> int:
    """The rule set's version: how many rule changes are recorded (``rule_versions``)."""
    from backend.rules.models import RuleVersion

    return int(session.scalar(select(func.count()).select_from(RuleVersion)) or 0)


def parse_version(value: str | int | None, what: str) -> int | None:
    """``3`` or ``v3`` → 3; ``ValidationFailed`` with a sentence otherwise."""
    if value is None or value == "":
        return None
    m = re.fullmatch(r"[vV]?(\d{1,9})", str(value).strip())
    if m is None or int(m.group(1)) < 1:
        raise ValidationFailed(f"{what} must be a version like 3 or v3, not {value!r}")
    return int(m.group(1))


def _rules_as_of(session: Session, version: int) -> None:
    """Inside the savepoint: every rule as it stood after the ``version``-th change."""
    from backend.rules.models import Rule, RuleVersion
    from backend.rules.service import DEFINITION_FIELDS

    current = rule_set_version(session=session)
    if not 1 <= version <= current:
        raise NotFound(f"no rule-set version {version}; the rules are at version {current}")
    latest: dict[int, tuple[int, dict[str, Any]]] = {}
    for rule_id, ver, definition in session.execute(
            select(RuleVersion.rule_id, RuleVersion.version, RuleVersion.definition)
            .order_by(RuleVersion.id).limit(version)):
        latest[rule_id] = (ver, definition or {})
    for rule in session.scalars(select(Rule)):
        if rule.id not in latest:
            rule.mode = "off"
            continue
        ver, definition = latest[rule.id]
        for f in DEFINITION_FIELDS:
            if f in definition:
                setattr(rule, f, definition[f])
        rule.version = ver
    session.flush()


def _check_model(session: Session, model_id: str) -> str:
    """``classifier-vN`` (also ``vN``, ``N``) of a trained model, or ``zero-shot``."""
    from backend.calibration.models import ModelArtifact
    from backend.ml_adapter.settings import get_ml_settings

    if not get_ml_settings().enabled:
        raise ValidationFailed("replaying with another model needs the ML hooks on "
                               "(QUORUM_ML_ENABLED=true)")
    if model_id.strip().lower() in ("zero-shot", "zeroshot"):
        return "zero-shot"
    m = re.fullmatch(r"(?:classifier-)?[vV]?(\d{1,9})", model_id.strip())
    if m is None:
        raise ValidationFailed(f"a model is classifier-vN (see `quorum train`) or zero-shot, "
                               f"not {model_id!r}")
    version = int(m.group(1))
    if session.scalar(select(ModelArtifact.id).where(ModelArtifact.version == version)) is None:
        raise NotFound(f"no trained model classifier-v{version}")
    return f"classifier-v{version}"


def _use_model(session: Session, model_id: str, ts: Any) -> None:
    """Inside the savepoint: ``model_id`` scores as the champion (the newest active model
    and the threshold set's model); its backing is still checked as it is."""
    from sqlalchemy import update

    from backend.calibration.models import ModelArtifact

    session.execute(update(ModelArtifact).values(is_active=False))
    if model_id.startswith("classifier-v"):
        session.execute(update(ModelArtifact).where(
            ModelArtifact.version == int(model_id.removeprefix("classifier-v")))
            .values(is_active=True))
        ts.model_id = model_id
    else:
        ts.model_id = None
    session.flush()


def replay(*, session: Session, since: datetime, settings: Settings, now: datetime,
           thresholds_version: int | None = None, rules_version: int | None = None,
           model_id: str | None = None, until: datetime | None = None,
           hooks: PipelineHooks | None = None, limit: int | None = None,
           rules_file: Path | None = None, rules: Any = None,
           rules_name: str = "draft rules") -> ReplayResult:
    """Re-run routing on the items created in ``[since, until)`` (at most ``limit``) with
    threshold set ``thresholds_version`` (default: the active one), the rule set of
    ``rules_version`` (default: today's) with the candidate ``rules_file`` loaded on top
    of it — or ``rules``, the content of such a file (a draft from the API or the page,
    named ``rules_name``), parsed and checked by the same code — and ``model_id``
    (default: the champion); writes nothing."""
    from backend.calibration import thresholds
    from backend.calibration.settings import get_calibration_settings
    from backend.policy import get_policy
    from backend.routing.pipeline import route_items

    policy = get_policy()
    active = thresholds.active_threshold_set(session=session, policy=policy)
    version = thresholds_version or active.version
    chosen = thresholds.get_version(session=session, version=version)  # NotFound: a sentence
    if rules_version is not None:
        current = rule_set_version(session=session)
        if not 1 <= rules_version <= current:
            raise NotFound(f"no rule-set version {rules_version}; the rules are at version "
                           f"{current}")
    model = _check_model(session, model_id) if model_id else None
    if rules_file is not None and rules is not None:
        raise ValidationFailed("replay a rules file or draft rules, not both")
    draft = None
    if rules is not None:
        from backend.rules.service import check_rules

        draft = check_rules(rules, policy=policy, where=rules_name)  # refuse before any work
    stmt = select(Item.id).where(Item.created_at >= since)
    if until is not None:
        stmt = stmt.where(Item.created_at < until)
    ids = list(session.scalars(stmt.order_by(Item.id).limit(limit)))
    info = {r.id: r for r in session.execute(select(Item.id, Item.source, Item.external_id)
                                             .where(Item.id.in_(ids)))} if ids else {}
    before = _stored_outcomes(session, ids)
    human = dict(session.execute(select(ItemStatus.item_id, ItemStatus.label).where(
        ItemStatus.item_id.in_(ids), ItemStatus.is_human.is_(True))).tuples().all()) \
        if ids else {}
    last_shadow = session.scalar(select(func.max(ShadowOutcome.id))) or 0
    session.flush()
    shadow: dict[int, str] = {}
    loaded: dict[str, list[str]] | None = None
    savepoint = session.begin_nested()
    try:
        if version != active.version:
            thresholds.apply(session=session, version=version, now=now)
        if rules_version is not None:
            _rules_as_of(session, rules_version)
        if rules_file is not None:
            from backend.rules.service import load_rules_file

            loaded = load_rules_file(session=session, path=Path(rules_file), policy=policy)
            session.flush()
        if draft is not None:
            from backend.rules.service import save_rules

            loaded = save_rules(session=session, parsed=draft, policy=policy)
            session.flush()
        if model is not None:
            _use_model(session, model, chosen)
        summary = route_items(session=session, item_ids=ids, now=now, settings=settings,
                              hooks=hooks, record_outcomes=True)
        session.flush()
        for item_id, source, label in session.execute(
                select(ShadowOutcome.item_id, ShadowOutcome.source, ShadowOutcome.label)
                .where(ShadowOutcome.id > last_shadow).order_by(ShadowOutcome.id)):
            if f"{source}:{label}" not in shadow.get(item_id, "").split(";"):
                shadow[item_id] = ";".join(filter(None, [shadow.get(item_id),
                                                         f"{source}:{label}"]))
    finally:
        savepoint.rollback()
    session.expire_all()
    records: list[dict[str, Any]] = []
    for item_id in ids:
        b, a, h = before.get(item_id), summary.outcomes.get(item_id), human.get(item_id)
        records.append({
            "item_id": item_id, "source": info[item_id].source,
            "external_id": info[item_id].external_id, "before": b, "after": a,
            "changed": b != a, "shadow": shadow.get(item_id), "human_label": h,
            "before_right": bool(_is_automatic(b) and h is not None and b.split(":", 1)[1] == h),
            "after_right": bool(_is_automatic(a) and h is not None and a.split(":", 1)[1] == h)})
    return ReplayResult(rows=pd.DataFrame(records, columns=COLUMNS),
                        thresholds_version=version, since=since, rules_version=rules_version,
                        model_id=model, confidence=get_calibration_settings().confidence,
                        rules_file=(Path(rules_file).name if rules_file is not None
                                    else rules_name if rules is not None else None),
                        rules_loaded=loaded)


#: Most items one replay from the API or the web page looks at (the CLI: ``--limit``).
MAX_ITEMS = 20_000


def parse_since(value: str, what: str = "since") -> datetime:
    """``YYYY-MM-DD`` or ISO 8601 (UTC if naive); ``ValidationFailed`` otherwise."""
    from datetime import UTC

    try:
        when = datetime.fromisoformat(value.strip())
    except (ValueError, AttributeError) as exc:
        raise ValidationFailed(f"{what} must be YYYY-MM-DD or an ISO 8601 time, not "
                               f"{value!r}") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def report(result: ReplayResult) -> dict[str, Any]:
    """The replay as plain data (the API's answer and the web page's table)."""
    def side(column: str) -> dict[str, Any]:
        right, judged = result.precision(column)
        p, lo, hi = result.interval(column)
        decided = int(result.rows[column].map(_is_automatic).sum())
        return {"decided": decided, "judged": judged, "right": right, "precision": p,
                "precision_low": lo, "precision_high": hi}

    summary = result.by_source_label()
    return {"since": result.since, "thresholds_version": result.thresholds_version,
            "rules_version": result.rules_version, "model_id": result.model_id,
            "rules_file": result.rules_file, "rules_loaded": result.rules_loaded,
            "replayed": len(result.rows), "changed": int(result.rows["changed"].sum()),
            "in_shadow": int(result.rows["shadow"].notna().sum()),
            "confidence": result.confidence,
            "changes": [{"before": b or None, "after": a or None, "items": n}
                        for (b, a), n in result.changes.most_common(100)],
            "by_source_label": [{k: (None if isinstance(v, float) and v != v else v)
                                 for k, v in r.items()}
                                for r in summary.to_dict(orient="records")],
            "before": side("before"), "after": side("after")}
