"""What the embed stage made of an item's image (``item_images``): fetched or not, and why.

One row per item, for the image reference the item carried when it was embedded
(``ref``: the URL or the file path). ``state`` is ``fetched`` (an http(s) image Quorum
downloaded under ``QUORUM_IMAGE_FETCH_*``), ``local`` (a file under the data directory)
or ``failed`` (``reason`` says why, in a sentence; the item was embedded and routed on
its text). ``pdq_hash`` / ``pdq_quality``: the image's PDQ perceptual hash
(``ml.hashes``), for every image that was read.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, utcnow
from backend.types import TZDateTime

FETCHED, LOCAL, FAILED = "fetched", "local", "failed"


class ItemImage(Base):
    __tablename__ = "item_images"

    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    ref: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str | None] = mapped_column(String(50))
    size: Mapped[int | None]
    pdq_hash: Mapped[str | None] = mapped_column(String(64))
    pdq_quality: Mapped[int | None]
    fetched_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
