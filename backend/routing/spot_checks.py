"""Keeping automation honest: a share of automatic decisions goes to people.

A configurable share (``QUORUM_SPOT_CHECK_RATES``, per band — ``auto_ok``, ``ML_BAD_HIGH``
— and per source — ``similarity``, ``rule``) of automatic decisions is queued in
``SPOT_CHECK`` with the automatic decision in the task's payload. The people's verdicts
measure the precision of automation per band; a disagreeing verdict corrects the item
(a human decision supersedes an automatic one). Sampling is deterministic (a hash of the
item and the event), so re-running it picks the same items. The task's payload records
the rate as ``sampling_probability``: calibration weighs the verdict by its inverse (a
check at 5 % stands for 20 automatic decisions; ``docs/calibration.md``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from backend.decisions.service import NewDecision
from backend.queues import service as queues
from backend.settings import Settings

KIND = "SPOT_CHECK"


def band_of(d: NewDecision) -> str:
    if d.source == "classifier":
        return str((d.details or {}).get("band") or "classifier")
    return d.source


def _draw(item_id: int, event_id: int) -> float:
    digest = hashlib.blake2b(f"{item_id}:{event_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def sample_spot_checks(*, session: Session, decisions: Sequence[NewDecision],
                       event_ids: Sequence[int], now: datetime, settings: Settings) -> int:
    """Queue the sampled automatic decisions for a spot check; returns how many."""
    rates = settings.spot_check_rates
    items: list[int] = []
    payloads: list[dict] = []
    for d, event_id in zip(decisions, event_ids, strict=True):
        if d.is_human:
            continue
        band = band_of(d)
        rate = rates.get(band, rates.get(d.source, 0.0))
        if rate > 0 and _draw(d.item_id, event_id) < rate:
            items.append(d.item_id)
            payloads.append({"spot_check_of": event_id, "band": band, "auto_label": d.label,
                             "source": d.source, "sampling_probability": min(float(rate), 1.0)})
    if items:
        queues.enqueue(session=session, kind=KIND, item_ids=items, payloads=payloads, now=now,
                       settings=settings)
    return len(items)
