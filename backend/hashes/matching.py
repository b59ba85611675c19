"""PDQ image hashes at routing: hash-bank matches and reuse of past verdicts.

The pipeline (``routing/pipeline.py``) calls :func:`image_signals` once per batch with
the items still undecided after the rules:

1. each item's image hash: stored in ``item_hashes`` per content hash; computed here
   for a local image file, or taken from ``pdq`` (64 hex digits, with ``pdq_quality``) in
   the item's row or metadata, which is how a fetcher of remote images hands it over
   (:func:`store_item_hash` does the same from code);
2. **bank matches**: the nearest banked hash within the bank's calibrated distance
   (``ml.hashes.HashBank``, multi-index hashing). A ``decide`` bank decides its label
   while its distance is live, and runs in shadow (records, routes to its queue) until
   then; a ``route`` bank routes to its queue;
3. **image reuse**: the nearest human-labelled items within the calibrated
   ``pdq_reuse`` distance, unanimous (``ml.similarity.decide_reuse``), as a
   ``SimilarityOutcome`` beside the embedding one (``encoder_id="pdq"``), live or shadow.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from backend.db import in_values
from backend.decisions.models import ItemStatus
from backend.hashes.models import REUSE_KEY, BankHash, HashBank, ItemHash, bank_key
from backend.hashes.service import HASH_QUEUE, distance_state
from backend.hashes.settings import HashSettings, get_hash_settings
from backend.routing.hooks import SimilarityOutcome

log = logging.getLogger("quorum.hashes")
ENCODER_ID = "pdq"


@dataclass(frozen=True)
class BankMatch:
    bank: str
    label: str
    action: str
    queue_kind: str
    banked_hash: str
    item_hash: str
    distance: int
    max_distance: int
    live: bool
    reason: str

    def inputs(self) -> dict[str, Any]:
        return {"signal": "pdq", "bank": self.bank, "bank_hash": self.banked_hash,
                "item_hash": self.item_hash, "distance": self.distance,
                "max_distance": self.max_distance}


@dataclass
class ImageSignals:
    hashes: dict[int, str] = field(default_factory=dict)
    banks: dict[int, BankMatch] = field(default_factory=dict)
    reuse: dict[int, SimilarityOutcome] = field(default_factory=dict)


def _valid_hex(value: Any) -> str | None:
    from ml.hashes import hex_to_words

    if not isinstance(value, str):
        return None
    try:
        hex_to_words([value])
    except ValueError:
        return None
    return value.strip().lower()


def _local_image(raw: Any, data_dir: Path | None) -> Path | None:
    if not raw or not isinstance(raw, str) or raw.startswith(("http://", "https://")) \
            or "\x00" in raw:
        return None
    path = Path(raw.removeprefix("file://"))
    for candidate in (path, (data_dir / path) if data_dir and not path.is_absolute() else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def store_item_hash(*, session: Session, item_id: int, hash_hex: str, quality: int,
                    content_hash: str | None, now: datetime) -> None:
    """Record an item's image hash (e.g. computed by the fetcher of remote images)."""
    session.execute(delete(ItemHash).where(ItemHash.item_id == item_id))
    session.execute(insert(ItemHash), [{"item_id": item_id, "hash": hash_hex.lower(),
                                        "quality": int(quality), "content_hash": content_hash,
                                        "created_at": now}])


def item_hashes(*, session: Session, items: Sequence[dict[str, Any]], now: datetime,
                settings: HashSettings | None = None,
                data_dir: Path | None = None) -> dict[int, str]:
    """Each item's usable image hash (quality >= ``min_quality``), computing and storing
    the missing ones."""
    from backend.media.images import ready_image
    from ml.hashes import pdq_hash

    hs = settings or get_hash_settings()
    ids = [r["id"] for r in items]
    stored = {r.item_id: r for r in session.scalars(
        select(ItemHash).where(in_values(session, ItemHash.item_id, ids)))} if ids else {}
    out: dict[int, str] = {}
    fresh: list[dict[str, Any]] = []
    for r in items:
        s = stored.get(r["id"])
        if s is not None and s.content_hash == r.get("content_hash"):
            if s.quality >= hs.min_quality:
                out[r["id"]] = s.hash
            continue
        meta = r.get("metadata") if isinstance(r.get("metadata"), dict) else {}
        given = _valid_hex(r.get("pdq") or meta.get("pdq"))
        hex_, quality = None, 0
        if given is not None:
            hex_ = given
            q = r.get("pdq_quality", meta.get("pdq_quality", 100))
            quality = int(q) if isinstance(q, int | float) and 0 <= q <= 100 else 100
        elif (ready := ready_image(r["id"], r.get("image"))) is not None and ready.hashed:
            if ready.pdq is not None:  # hashed before the routing transaction
                hex_, quality = ready.pdq
        else:
            path = _local_image(r.get("image"), data_dir)
            if path is not None:
                try:
                    h = pdq_hash(path)
                except Exception as exc:  # an unreadable file is no signal, not a failure
                    log.warning("no PDQ hash for item %s: %s", r["id"], exc)
                    h = None
                if h is not None:
                    hex_, quality = h.hex, h.quality
        if hex_ is None:
            continue
        fresh.append({"item_id": r["id"], "hash": hex_, "quality": quality,
                      "content_hash": r.get("content_hash"), "created_at": now})
        if quality >= hs.min_quality:
            out[r["id"]] = hex_
    if fresh:
        session.execute(delete(ItemHash).where(ItemHash.item_id.in_(
            [f["item_id"] for f in fresh])))
        session.execute(insert(ItemHash), fresh)
    return out


#: per database URL: (bank rows, max id, newest) -> (ml HashBank, row id -> (bank id, hex))
_bank_cache: dict[str, tuple[tuple[Any, ...], Any, dict[int, tuple[int, str]]]] = {}


def _bank_index(session: Session) -> tuple[Any, dict[int, tuple[int, str]]]:
    from sqlalchemy import func

    from ml.hashes import HashBank as Bank
    from ml.hashes import hex_to_words

    key = tuple(session.execute(select(func.count(), func.max(BankHash.id),
                                       func.max(BankHash.created_at))
                                .select_from(BankHash)).one())
    url = str(session.get_bind().engine.url)
    hit = _bank_cache.get(url)
    if hit is not None and hit[0] == key:
        return hit[1], hit[2]
    rows = session.execute(select(BankHash.id, BankHash.bank_id, BankHash.hash)
                           .order_by(BankHash.id)).all()
    index = Bank()
    if rows:
        index.add([r[0] for r in rows], hex_to_words([r[2] for r in rows]))
    meta = {r[0]: (r[1], r[2]) for r in rows}
    _bank_cache[url] = (key, index, meta)
    return index, meta


def match_banks(*, session: Session, hashes: dict[int, str],
                settings: HashSettings | None = None) -> dict[int, BankMatch]:
    """Per item, its nearest banked hash within that bank's distance (nearest bank wins;
    ties: the bank added first)."""
    from ml.hashes import hex_to_words

    if not hashes:
        return {}
    banks = {b.id: b for b in session.scalars(select(HashBank))}
    if not banks:
        return {}
    states = {bid: distance_state(session=session, key=bank_key(b.name), settings=settings)
              for bid, b in banks.items()}
    widest = int(max(s.value or 0 for s in states.values()))
    index, meta = _bank_index(session)
    if len(index) == 0:
        return {}
    item_ids = list(hashes)
    found = index.match(hex_to_words([hashes[i] for i in item_ids]), max_distance=widest,
                        k=max(8, len(banks) * 2))
    out: dict[int, BankMatch] = {}
    for item_id, matches in zip(item_ids, found, strict=True):
        for m in matches:  # nearest first
            bank_id, banked = meta[m.id]
            st, bank = states[bank_id], banks[bank_id]
            if m.distance > int(st.value or 0):
                continue
            live = st.state == "live"
            out[item_id] = BankMatch(
                bank=bank.name, label=bank.label, action=bank.action,
                queue_kind=bank.queue_kind or HASH_QUEUE, banked_hash=banked,
                item_hash=hashes[item_id], distance=m.distance,
                max_distance=int(st.value or 0), live=live,
                reason=st.reason if not live else "")
            break
    return out


def pdq_reuse(*, session: Session, hashes: dict[int, str], k: int = 5,
              settings: HashSettings | None = None) -> dict[int, SimilarityOutcome]:
    """Reuse of past human verdicts on near-duplicate images (never an item's own)."""
    from ml.hashes import HashBank as Bank
    from ml.hashes import hex_to_words
    from ml.similarity import decide_reuse

    if not hashes:
        return {}
    hs = settings or get_hash_settings()
    rows = session.execute(select(ItemHash.item_id, ItemHash.hash, ItemStatus.label)
                           .join(ItemStatus, ItemStatus.item_id == ItemHash.item_id)
                           .where(ItemStatus.is_human.is_(True), ItemStatus.label.is_not(None),
                                  ItemHash.quality >= hs.min_quality)).all()
    if not rows:
        return {}
    st = distance_state(session=session, key=REUSE_KEY, settings=hs)
    reuse = int(st.value or 0)
    live = st.state == "live"
    labels = {r[0]: r[2] for r in rows}
    index = Bank().add([r[0] for r in rows], hex_to_words([r[1] for r in rows]))
    item_ids = list(hashes)
    found = index.match(hex_to_words([hashes[i] for i in item_ids]), max_distance=reuse,
                        k=k + 1)
    out: dict[int, SimilarityOutcome] = {}
    for item_id, matches in zip(item_ids, found, strict=True):
        ms = [m for m in matches if m.id != item_id][:k]
        if not ms:
            continue
        d = decide_reuse(np.array([m.id for m in ms]), np.array([m.distance for m in ms],
                                                                 dtype=float),
                         labels, reuse_distance=float(reuse))
        if d.kind == "none":
            continue
        out[item_id] = SimilarityOutcome(
            kind=d.kind, label=d.label, neighbour_id=d.neighbour_id,
            distance=None if d.distance is None else float(d.distance),
            threshold_set_version=None, live=live,
            reason=None if live else f"PDQ reuse distance {reuse}: {st.reason}",
            encoder_id=ENCODER_ID,
            details={"signal": "pdq", "encoder_id": ENCODER_ID, "reuse_distance": reuse,
                     "item_hash": hashes[item_id], "neighbours": [
                         {"id": m.id, "distance": m.distance, "label": labels.get(m.id)}
                         for m in ms]})
    return out


def warm_banks(*, sessions: Any) -> None:
    """Build (or refresh) the process's bank index through a read-only session, before
    the routing transaction: at 1M banked hashes the first build takes seconds, which
    must not be spent holding SQLite's write lock."""
    from backend.db import read_only

    if not get_hash_settings().enabled:
        return
    with read_only(sessions) as session:
        if session.scalar(select(HashBank.id).limit(1)) is not None:
            _bank_index(session)


def image_signals(*, session: Session, items: Sequence[dict[str, Any]], now: datetime,
                  data_dir: Path | None = None) -> ImageSignals:
    """Hashes, bank matches and image reuse for ``items`` (nothing when switched off)."""
    hs = get_hash_settings()
    if not hs.enabled or not items:
        return ImageSignals()
    hashes = item_hashes(session=session, items=items, now=now, settings=hs, data_dir=data_dir)
    banks = match_banks(session=session, hashes=hashes, settings=hs)
    rest = {i: h for i, h in hashes.items() if i not in banks}
    return ImageSignals(hashes=hashes, banks=banks,
                        reuse=pdq_reuse(session=session, hashes=rest, settings=hs))
