"""Hash banks: import lists of PDQ hashes with a label, list them, the calibrated distances
(live / shadow) and their calibration from the labelled history.

Safe by default, like every automatic stage: a bank's distance (``bank:<name>``) and the
image reuse distance (``pdq_reuse``) decide only once a calibration run
(:func:`calibrate_distances`, ``quorum hashes calibrate``) has backed them at the target
precision (one-sided lower confidence bound); until then a match runs in **shadow**: the
pipeline records what it would have decided and the item goes to people.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.calibration.thresholds import BandState, _state
from backend.decisions.models import ItemStatus
from backend.errors import NotFound, ValidationFailed
from backend.hashes.models import (
    BANK_ACTIONS,
    REUSE_KEY,
    BankHash,
    HashBank,
    HashDistance,
    ItemHash,
    bank_key,
)
from backend.hashes.settings import HashSettings, get_hash_settings
from backend.policy import Policy

HASH_QUEUE = "HASH_MATCH"


@dataclass(frozen=True)
class ImportResult:
    bank: str
    label: str
    received: int
    added: int
    already: int


def parse_hash_lines(lines: Iterable[str], *, limit: int) -> list[tuple[str, str | None]]:
    """``(hash, ref)`` per line of a hash list: ``HEX`` or ``HEX,REF`` (or a tab); blank
    lines, ``#`` comments and a ``hash`` header are skipped. A bad line raises
    ``ValidationFailed`` naming it; nothing is stored."""
    from ml.hashes import hex_to_words

    out: list[tuple[str, str | None]] = []
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.replace("\t", ",").split(",", 1)]
        if n == 1 and parts[0].lower() == "hash":
            continue
        try:
            hex_to_words([parts[0]])
        except ValueError as exc:
            raise ValidationFailed(f"line {n}: {exc}") from exc
        ref = parts[1] if len(parts) > 1 and parts[1] else None
        if ref is not None and len(ref) > 200:
            raise ValidationFailed(f"line {n}: a reference is at most 200 characters")
        out.append((parts[0].lower(), ref))
        if len(out) > limit:
            raise ValidationFailed(f"an import holds at most {limit} hashes "
                                   "(QUORUM_HASH_MAX_IMPORT)")
    return out


def import_hashes(*, session: Session, bank: str, label: str,
                  hashes: Sequence[tuple[str, str | None]], policy: Policy, now: datetime,
                  action: str | None = None, queue_kind: str | None = None,
                  description: str | None = None) -> ImportResult:
    """Add ``hashes`` to the bank ``bank`` (created with ``label`` if new). Idempotent: a
    hash already in the bank is counted, not added twice. The bank's label must be the
    policy's and stays the bank's (a different one is refused). ``action`` / ``queue_kind``
    None: ``decide`` / ``HASH_MATCH`` for a new bank, unchanged for an existing one."""
    if label not in policy.keys:
        raise ValidationFailed(f"unknown label {label!r}; the policy's labels are "
                               f"{list(policy.keys)}")
    if action is not None and action not in BANK_ACTIONS:
        raise ValidationFailed(f"action must be one of {list(BANK_ACTIONS)}")
    if not bank or len(bank) > 100 or not bank.isprintable():
        raise ValidationFailed("a bank name is 1 to 100 printable characters")
    if queue_kind is not None and not re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", queue_kind):
        raise ValidationFailed("a queue kind is upper-case letters, digits and _ (at most "
                               "64), e.g. HASH_MATCH")
    row = session.scalar(select(HashBank).where(HashBank.name == bank).with_for_update())
    if row is None:
        row = HashBank(name=bank, label=label, action=action or "decide",
                       queue_kind=queue_kind,
                       description=description, created_at=now, updated_at=now)
        session.add(row)
        session.flush()
    elif row.label != label:
        raise ValidationFailed(f"bank {bank!r} holds {row.label!r} hashes, not {label!r}; "
                               "use another bank")
    else:
        row.updated_at = now
        if action is not None:
            row.action = action
        if queue_kind is not None:
            row.queue_kind = queue_kind
    unique: dict[str, str | None] = {}
    for h, ref in hashes:
        unique.setdefault(h.lower(), ref)
    existing: set[str] = set()
    keys = list(unique)
    for start in range(0, len(keys), 1000):
        existing.update(session.scalars(select(BankHash.hash).where(
            BankHash.bank_id == row.id, BankHash.hash.in_(keys[start:start + 1000]))))
    new = [{"bank_id": row.id, "hash": h, "ref": ref, "created_at": now}
           for h, ref in unique.items() if h not in existing]
    for start in range(0, len(new), 5000):
        session.execute(BankHash.__table__.insert(), new[start:start + 5000])
    session.flush()
    return ImportResult(bank=bank, label=label, received=len(hashes), added=len(new),
                        already=len(unique) - len(new))


def get_bank(*, session: Session, name: str) -> HashBank:
    bank = session.scalar(select(HashBank).where(HashBank.name == name))
    if bank is None:
        raise NotFound(f"no hash bank {name!r}")
    return bank


def distance_state(*, session: Session, key: str, settings: HashSettings | None = None
                   ) -> BandState:
    """Whether the distance ``key`` (``bank:<name>`` or ``pdq_reuse``) decides: live when
    a calibration run backed its current value, else shadow."""
    settings = settings or get_hash_settings()
    row = session.get(HashDistance, key)
    default = settings.reuse_distance if key == REUSE_KEY else settings.bank_distance
    value = row.distance if row is not None else default
    return _state(key=key, label=None, band="hash" if key != REUSE_KEY else "pdq_reuse",
                  value=float(value), enabled=True, backing=(row.backing if row else None),
                  bound=None, bound_name="encoder_id", off_reason="")


def hash_states(*, session: Session, settings: HashSettings | None = None) -> list[BandState]:
    """Every hash distance with its state, like the threshold set's cut-offs: one per bank
    (``bank:<name>``, ``label`` the bank's label) then the image reuse distance
    (``pdq_reuse``); each with the value routing uses and the bound behind it (lower
    bound, labels, target, run). **off** when image hashing is switched off
    (``QUORUM_HASH_ENABLED=false``: nothing is hashed or matched) and, for a bank, when
    its action is ``route`` (a match goes to a queue, the distance never decides);
    otherwise :func:`distance_state` (live when backed at its value, else shadow)."""
    from dataclasses import replace

    settings = settings or get_hash_settings()
    out: list[BandState] = []
    for b in session.scalars(select(HashBank).order_by(HashBank.name)):
        st = replace(distance_state(session=session, key=bank_key(b.name), settings=settings),
                     label=b.label)
        if b.action == "route":
            st = replace(st, state="off", reason=f"the bank routes matches to "
                         f"{b.queue_kind or HASH_QUEUE}; it never decides")
        out.append(st)
    out.append(distance_state(session=session, key=REUSE_KEY, settings=settings))
    if not settings.enabled:
        out = [replace(st, state="off", reason="image hashing is off (QUORUM_HASH_ENABLED="
                       "false)") for st in out]
    return out


def list_banks(*, session: Session) -> list[dict[str, Any]]:
    counts = dict(session.execute(select(BankHash.bank_id, func.count())
                                  .group_by(BankHash.bank_id)).tuples().all())
    out = []
    for b in session.scalars(select(HashBank).order_by(HashBank.name)):
        st = distance_state(session=session, key=bank_key(b.name))
        out.append({"name": b.name, "label": b.label, "action": b.action,
                    "queue_kind": b.queue_kind or HASH_QUEUE, "hashes": counts.get(b.id, 0),
                    "distance": int(st.value or 0), "state": st.state, "reason": st.reason,
                    "lower": st.lower, "n_auto": st.n_auto, "n_labelled": st.n_labelled})
    return out


# ---------------------------------------------------------------- calibration
def _human_hashes(session: Session, min_quality: int) -> tuple[list[int], list[str], list[str]]:
    rows = session.execute(select(ItemHash.item_id, ItemHash.hash, ItemStatus.label)
                           .join(ItemStatus, ItemStatus.item_id == ItemHash.item_id)
                           .where(ItemStatus.is_human.is_(True), ItemStatus.label.is_not(None),
                                  ItemHash.quality >= min_quality)
                           .order_by(ItemHash.item_id)).all()
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def _save(session: Session, key: str, backing: dict[str, Any], now: datetime) -> None:
    row = session.get(HashDistance, key, with_for_update=True)
    if row is None:
        session.add(HashDistance(key=key, distance=int(backing["threshold"]),
                                 backing=backing, updated_at=now))
    else:
        row.distance, row.backing, row.updated_at = int(backing["threshold"]), backing, now
    session.flush()


def calibrate_distances(*, session: Session, now: datetime, target: float | None = None,
                        confidence: float | None = None) -> dict[str, dict[str, Any]]:
    """Calibrate every bank's distance and the image reuse distance on the human-labelled
    items that have an image hash; store the chosen distance and its backing.

    Bank ``B`` (label ``L``): per labelled item, its nearest hash in ``B``; right when
    people labelled the item ``L``. Reuse: per labelled item, its nearest other labelled
    item (leave one out); right when both got the same label. The distance is the largest
    whose lower bound clears ``target`` (default ``QUORUM_CALIBRATION_TARGET_PRECISION``);
    when none does, the current default is kept, unbacked (shadow)."""
    from backend.calibration.settings import get_calibration_settings
    from ml.hash_calibration import choose_distance, distance_curve
    from ml.hashes import HashBank as Bank
    from ml.hashes import hex_to_words

    cal, hs = get_calibration_settings(), get_hash_settings()
    target = cal.target_precision if target is None else target
    confidence = cal.confidence if confidence is None else confidence
    ids, hexes, labels = _human_hashes(session, hs.min_quality)
    words = hex_to_words(hexes) if hexes else np.zeros((0, 4), np.uint64)
    out: dict[str, dict[str, Any]] = {}
    limit = 64

    def finish(key: str, dists: list[int], right: list[bool], fallback: int) -> None:
        curve = distance_curve(dists, right, max_distance=limit, confidence=confidence,
                               method=cal.bound_method)
        backing = choose_distance(curve, target=target, n_labelled=len(ids),
                                  fallback=fallback) | {
            "confidence": confidence, "method": cal.bound_method,
            "calibrated_at": now.isoformat()}
        _save(session, key, backing, now)
        out[key] = backing

    for bank in session.scalars(select(HashBank).order_by(HashBank.name)):
        banked = list(session.scalars(select(BankHash.hash).where(BankHash.bank_id == bank.id)))
        dists: list[int] = []
        right: list[bool] = []
        if banked and len(words):
            index = Bank().add(np.arange(len(banked)), hex_to_words(banked))
            for lab, found in zip(labels, index.match(words, max_distance=limit, k=1),
                                  strict=True):
                if found:
                    dists.append(found[0].distance)
                    right.append(lab == bank.label)
        finish(bank_key(bank.name), dists, right, hs.bank_distance)
    dists, right = [], []
    if len(words) > 1:
        index = Bank().add(np.asarray(ids), words)
        label_of = dict(zip(ids, labels, strict=True))
        for item_id, lab, found in zip(ids, labels, index.match(words, max_distance=limit, k=2),
                                       strict=True):
            other = [m for m in found if m.id != item_id]
            if other:
                dists.append(other[0].distance)
                right.append(label_of[other[0].id] == lab)
    finish(REUSE_KEY, dists, right, hs.reuse_distance)
    return out
