"""Ingest (idempotent, batched) and reads.

Bad rows: by default a batch with any invalid row is refused as a whole and nothing
of it is stored (``stored=False`` and the per-row errors). With ``partial=True`` the
valid rows are stored and the invalid ones are listed in ``errors``.

Re-ingesting ``(source, external_id)`` never creates a second item. Identical content
is ``unchanged``; changed content updates the item's fields (``updated``) but never its
decisions: the decision log and the current status stay as they are.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, selectinload

from backend.db import copy_rows, in_values, insert_returning_ids, utcnow
from backend.decisions.models import DecisionEvent, ItemStatus
from backend.errors import NotFound
from backend.items.models import Item, ItemScore
from backend.items.schemas import IngestResult, ItemCreate, RowError
from backend.policy import Policy

CONTENT_FIELDS = (
    "title", "description", "image", "url", "price", "currency", "seller_id", "category",
    "gmv", "exposure", "is_new", "is_golden", "golden_label", "metadata",
)
_CHUNK = 500


def content_hash(row: ItemCreate) -> str:
    return _hash_of(row.model_dump(include=set(CONTENT_FIELDS)))


def _hash_of(data: Mapping[str, Any]) -> str:
    """SHA-256 of the content fields as sorted JSON (keep stable: stored hashes use it)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def validate_rows(
    rows: Sequence[Mapping[str, Any]], *, policy: Policy
) -> tuple[list[tuple[int, ItemCreate]], list[RowError]]:
    good: list[tuple[int, ItemCreate]] = []
    errors: list[RowError] = []
    seen: dict[tuple[str, str], int] = {}
    for n, raw in enumerate(rows, start=1):
        if not isinstance(raw, Mapping):
            errors.append(RowError(row=n, field=None, message="a row must be a JSON object"))
            continue
        try:
            item = ItemCreate.model_validate(dict(raw))
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"]) or None
                errors.append(RowError(row=n, field=loc, message=err["msg"]))
            continue
        if item.golden_label is not None and item.golden_label not in policy.keys:
            errors.append(RowError(
                row=n, field="golden_label",
                message=f"unknown label {item.golden_label!r}; use one of {policy.keys}"))
            continue
        key = (item.source, item.external_id)
        if key in seen:
            errors.append(RowError(row=n, field="external_id",
                                   message=f"duplicate of row {seen[key]} in the same batch"))
            continue
        seen[key] = n
        good.append((n, item))
    return good, errors


def _dump(item: ItemCreate) -> tuple[dict[str, Any], str]:
    """The item's column values (``metadata`` under its column name) and content hash,
    from one ``model_dump``."""
    values = item.model_dump()
    values["content_hash"] = _hash_of({k: values[k] for k in CONTENT_FIELDS})
    return values, values["content_hash"]


def _existing(session: Session, keys: Sequence[tuple[str, str]]
              ) -> dict[tuple[str, str], tuple[int, str]]:
    """``(source, external_id) -> (id, content_hash)`` for the stored ones among ``keys``.

    One ``source = ? AND external_id IN (...)`` per source: it uses the unique index on
    both backends (a row-value ``IN`` scans the whole table on SQLite and PostgreSQL).
    """
    by_source: dict[str, list[str]] = {}
    for source, external_id in keys:
        by_source.setdefault(source, []).append(external_id)
    found: dict[tuple[str, str], tuple[int, str]] = {}
    postgres = session.get_bind().dialect.name == "postgresql"
    for source, ext_ids in by_source.items():
        stmt = _EXISTING_PG if postgres else select(
            Item.id, Item.external_id, Item.content_hash).where(
                Item.source == source, Item.external_id.in_(ext_ids))
        for r in session.execute(stmt, {"source": source, "ext": ext_ids} if postgres else {}):
            found[(source, r.external_id)] = (r.id, r.content_hash)
    return found


#: PostgreSQL: one unique-index probe per key, whatever the table's statistics say. With
#: ``external_id = ANY(:ext)`` and the statistics of a table that grew since its last
#: ANALYZE (a burst of ingest outruns autovacuum), the planner scanned the index by
#: ``source`` alone and filtered every item of the source on each lookup (EXPLAIN: 20,000
#: rows removed by filter for 500 keys): acceptance slowed down as the table grew. The
#: ``LIMIT 1`` keeps the lateral subquery from being flattened into a join whose plan
#: would depend on those statistics again; ``(source, external_id)`` is unique.
_EXISTING_PG = text(
    "SELECT i.id, i.external_id, i.content_hash FROM unnest(CAST(:ext AS text[])) AS k(ext) "
    "CROSS JOIN LATERAL (SELECT id, external_id, content_hash FROM items "
    "WHERE source = :source AND external_id = k.ext LIMIT 1) AS i")


def ingest(
    *,
    session: Session,
    rows: Sequence[Mapping[str, Any]],
    policy: Policy,
    partial: bool = False,
    now: datetime | None = None,
) -> tuple[IngestResult, list[int]]:
    """Store a batch. Returns the result and the ids of the items created (to route)."""
    now = now or utcnow()
    good, errors = validate_rows(rows, policy=policy)
    result = IngestResult(received=len(rows), created=0, updated=0, unchanged=0,
                          rejected=len(rows) - len(good), stored=True, errors=errors,
                          item_ids=[0] * len(rows))
    if errors and not partial:
        result.stored = False
        result.rejected = len(rows)
        return result, []

    created_ids: list[int] = []
    items_table, status_table = Item.__table__, ItemStatus.__table__
    for start in range(0, len(good), _CHUNK):
        chunk = good[start:start + _CHUNK]
        existing = _existing(session, [(it.source, it.external_id) for _, it in chunk])
        to_insert: list[tuple[int, dict[str, Any]]] = []
        to_update: list[dict[str, Any]] = []
        for n, it in chunk:
            values, digest = _dump(it)
            found = existing.get((it.source, it.external_id))
            if found is None:
                values["updated_at"] = values["created_at"] = now
                to_insert.append((n, values))
            elif found[1] == digest:
                result.unchanged += 1
                result.item_ids[n - 1] = found[0]
            else:
                values.pop("source"), values.pop("external_id")
                values["metadata_"] = values.pop("metadata")
                values["id"] = found[0]
                values["updated_at"] = now
                to_update.append(values)
                result.updated += 1
                result.item_ids[n - 1] = found[0]
        if to_insert:
            # Core inserts (no ORM unit of work): the column is named ``metadata``
            # On PostgreSQL both go in as one COPY stream each (``copy_rows``): a pipelined
            # executemany was one INSERT per row to bind and execute, ~55% of an ingest call.
            ids = insert_returning_ids(session, items_table, [v for _, v in to_insert],
                                       copy=True)
            copy_rows(session, status_table, [
                {"item_id": i, "state": "received", "is_human": False, "updated_at": now}
                for i in ids
            ])
            for (n, _), item_id in zip(to_insert, ids, strict=True):
                result.item_ids[n - 1] = item_id
            created_ids.extend(ids)
            result.created += len(ids)
        if to_update:
            session.execute(update(Item), to_update)
    session.flush()
    return result, created_ids


def states(*, session: Session, item_ids: Sequence[int]) -> dict[int, str]:
    """Item id -> its state (``received``, ``queued``, ``decided``)."""
    ids = sorted({i for i in item_ids if i})
    out: dict[int, str] = {}
    for start in range(0, len(ids), 1000):
        out.update(session.execute(select(ItemStatus.item_id, ItemStatus.state).where(
            in_values(session, ItemStatus.item_id, ids[start:start + 1000]))).tuples().all())
    return out


def newest_scores(*, session: Session, item_ids: Collection[int]) -> dict[int, dict[str, float]]:
    """Item id -> the classifier's probabilities (``label -> p``) of its newest
    ``ItemScore``, the champion's where a challenger scored beside it (the champion's row
    is written first); items never scored are absent. One query on PostgreSQL (an array
    parameter), one per 1000 items on SQLite. The crowd's prior and push order
    (`crowdwork.service.classifier_scores`) and the moderators' lease order
    (`queues.service.enqueue`) both read scores through here."""
    ids = sorted({int(i) for i in item_ids})
    step = (len(ids) or 1) if session.get_bind().dialect.name == "postgresql" else 1000
    newest: dict[int, dict[str, float]] = {}
    for start in range(0, len(ids), step):
        rows = session.execute(
            select(ItemScore.item_id, ItemScore.scores)
            .where(in_values(session, ItemScore.item_id, ids[start:start + step]))
            .order_by(ItemScore.item_id, ItemScore.created_at.desc(), ItemScore.id)).all()
        for item_id, scores in rows:
            if item_id not in newest and scores:
                newest[item_id] = scores
    return newest


def get_item(*, session: Session, item_id: int) -> Item:
    item = session.scalar(
        select(Item).where(Item.id == item_id).options(selectinload(Item.tags))
    )
    if item is None:
        raise NotFound(f"no item with id {item_id}")
    return item


def get_item_by_key(*, session: Session, source: str, external_id: str) -> Item:
    source = unicodedata.normalize("NFC", source)  # stored keys are NFC (ItemCreate)
    external_id = unicodedata.normalize("NFC", external_id)
    item = session.scalar(select(Item).where(Item.source == source,
                                             Item.external_id == external_id))
    if item is None:
        raise NotFound(f"no item {source}/{external_id}")
    return item


def history(*, session: Session, item_id: int) -> list[DecisionEvent]:
    return list(session.scalars(
        select(DecisionEvent).where(DecisionEvent.item_id == item_id).order_by(DecisionEvent.id)
    ))
