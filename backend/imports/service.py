"""Bring your history: labelled items become human decisions (source ``import``).

A row is an item (the fields of ``POST /api/v1/items``) plus ``label`` (a policy label
key), ``decided_by`` (who decided, free text, optional) and ``decided_at`` (when,
optional, ISO 8601). Importing stores the item (as ingest does, without routing it:
no queue, no task) and records one human decision event with ``source="import"``;
its details keep ``decided_by``, ``decided_at`` and ``sampling_probability``. Imported
verdicts are final human verdicts like a moderator's: ``quorum train`` learns from them,
``quorum calibrate`` measures on them and the neighbour index takes them in at its next
sync.

Idempotent: re-importing the same row changes nothing (the item is ``unchanged`` and
no event is appended). A row whose label differs from the item's current *imported*
verdict records a new import decision (``relabelled``: the file was corrected). A
verdict made in Quorum (moderator, crowd) is never overridden by an import: the row
is counted as ``kept``.

``sampling_probability`` (optional, in (0, 1], default 1): the chance the item got a
human label at all. A history where every item was labelled leaves it out; one where
automatic decisions were labelled only through 5 % spot checks gives those rows 0.05,
and calibration weighs each label by ``1 / sampling_probability`` (inverse-probability
weighting, ``docs/calibration.md``).

A batch with a bad row is refused whole (nothing stored) unless ``partial``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db import utcnow
from backend.decisions.models import ItemStatus
from backend.decisions.service import NewDecision, record_decisions
from backend.errors import ValidationFailed
from backend.items.schemas import RowError
from backend.items.service import ingest
from backend.policy import Policy

SOURCE = "import"
VERDICT_FIELDS = ("label", "decided_by", "decided_at", "sampling_probability")


def _probability(value: Any) -> float:
    if value is None or value == "":
        return 1.0
    try:
        p = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sampling_probability {value!r} is not a number") from exc
    if not 0.0 < p <= 1.0:  # NaN fails too
        raise ValueError(f"sampling_probability must be in (0, 1], not {value!r}")
    return p


class ImportResult(BaseModel):
    received: int
    items_created: int = Field(description="items new to Quorum")
    items_updated: int = Field(description="known items whose content changed")
    decisions: int = Field(description="import decisions recorded")
    relabelled: int = Field(description="of those, items whose imported label changed")
    unchanged: int = Field(description="rows whose item already had this imported label")
    kept: int = Field(description="rows skipped because a verdict made in Quorum stands")
    rejected: int
    stored: bool = Field(description="False when the batch was refused as a whole")
    errors: list[RowError] = Field(default_factory=list)


def _decided_at(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"decided_at {value!r} is not an ISO 8601 date-time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _split(rows: Sequence[Any], *, policy: Policy
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any] | None], list[RowError]]:
    """Item parts, verdict parts (None where the verdict is bad) and verdict errors."""
    items: list[dict[str, Any]] = []
    verdicts: list[dict[str, Any] | None] = []
    errors: list[RowError] = []
    for n, raw in enumerate(rows, start=1):
        if not isinstance(raw, Mapping):
            items.append(raw)  # ingest's validation names the problem
            verdicts.append(None)
            continue
        items.append({k: v for k, v in raw.items() if k not in VERDICT_FIELDS})
        label = raw.get("label")
        if label is None or str(label).strip() == "":
            errors.append(RowError(row=n, field="label", message="a verdict needs its label"))
            verdicts.append(None)
            continue
        label = str(label).strip()
        if label not in policy.keys:
            errors.append(RowError(row=n, field="label", message=f"unknown label {label!r}; "
                                   f"use one of {policy.keys}"))
            verdicts.append(None)
            continue
        try:
            decided_at = _decided_at(raw.get("decided_at"))
        except ValueError as exc:
            errors.append(RowError(row=n, field="decided_at", message=str(exc)))
            verdicts.append(None)
            continue
        try:
            probability = _probability(raw.get("sampling_probability"))
        except ValueError as exc:
            errors.append(RowError(row=n, field="sampling_probability", message=str(exc)))
            verdicts.append(None)
            continue
        by = raw.get("decided_by")
        verdicts.append({"label": label, "decided_by": None if by is None else str(by)[:200],
                         "decided_at": decided_at, "sampling_probability": probability})
    return items, verdicts, errors


def check_rows(rows: Sequence[Any], *, policy: Policy) -> list[RowError]:
    """Every problem of ``rows`` (item fields and verdicts), in row order; stores nothing."""
    from backend.items.service import validate_rows

    items, _, verdict_errors = _split(rows, policy=policy)
    _, item_errors = validate_rows(items, policy=policy)
    return sorted(verdict_errors + item_errors, key=lambda e: e.row)


def import_verdicts(*, session: Session, rows: Sequence[Any], policy: Policy,
                    partial: bool = False, max_batch: int | None = None,
                    now: datetime | None = None) -> ImportResult:
    """Import one batch of labelled items (see the module docstring)."""
    if max_batch is not None and len(rows) > max_batch:
        raise ValidationFailed(f"an import batch holds at most {max_batch} rows; this one "
                               f"has {len(rows)}")
    now = now or utcnow()
    items, verdicts, verdict_errors = _split(rows, policy=policy)
    bad_verdicts = {e.row for e in verdict_errors}
    stored, item_ids = True, [0] * len(rows)
    result = ImportResult(received=len(rows), items_created=0, items_updated=0, decisions=0,
                          relabelled=0, unchanged=0, kept=0, rejected=0, stored=True)
    # a row with a bad verdict is not ingested either: the item would arrive unlabelled
    keep = [i for i in range(len(rows)) if i + 1 not in bad_verdicts]
    if verdict_errors and not partial:
        result.errors = check_rows(rows, policy=policy)
        result.stored, result.rejected = False, len(rows)
        return result
    ingested, _ = ingest(session=session, rows=[items[i] for i in keep], policy=policy,
                         partial=partial, now=now)
    for e in ingested.errors:
        e.row = keep[e.row - 1] + 1
    result.errors = sorted(verdict_errors + ingested.errors, key=lambda e: e.row)
    if not ingested.stored:
        result.stored, result.rejected = False, len(rows)
        return result
    for pos, item_id in zip(keep, ingested.item_ids, strict=True):
        item_ids[pos] = item_id
    result.items_created, result.items_updated = ingested.created, ingested.updated
    result.rejected = sum(1 for i in item_ids if i == 0)
    todo = [(item_id, verdicts[pos]) for pos, item_id in enumerate(item_ids)
            if item_id and verdicts[pos] is not None]
    current: dict[int, tuple[str | None, str | None, bool]] = {}
    ids = sorted({item_id for item_id, _ in todo})
    for start in range(0, len(ids), 500):
        for r in session.execute(select(ItemStatus.item_id, ItemStatus.label,
                                        ItemStatus.source, ItemStatus.is_human).where(
                ItemStatus.item_id.in_(ids[start:start + 500]))):
            current[r.item_id] = (r.label, r.source, r.is_human)
    decisions: list[NewDecision] = []
    seen: set[int] = set()
    for item_id, verdict in todo:
        assert verdict is not None
        label, source, is_human = current.get(item_id, (None, None, False))
        if item_id in seen or (source == SOURCE and label == verdict["label"]):
            result.unchanged += 1
            continue
        if is_human and source != SOURCE:
            result.kept += 1
            continue
        if source == SOURCE:
            result.relabelled += 1
        seen.add(item_id)
        decided_at = verdict["decided_at"]
        decisions.append(NewDecision(item_id=item_id, label=verdict["label"], source=SOURCE,
                                     details={"decided_by": verdict["decided_by"],
                                              "decided_at": decided_at.isoformat()
                                              if decided_at else None,
                                              "sampling_probability":
                                                  verdict["sampling_probability"]}))
    record_decisions(session=session, decisions=decisions, now=now)
    result.decisions = len(decisions)
    result.stored = stored
    return result
