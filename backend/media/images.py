"""Item images for the embed stage: fetched by URL under guards, read from the data
directory, recorded on the item (``item_images``) with a PDQ hash, handed to ``ml/`` as
bytes.

``ml/`` never downloads anything for Quorum (its own ``fetch_images`` stays off): the
ML hooks call :func:`load_images` for the items about to be embedded and pass the bytes
in ``ml.inputs.ItemInput.image``. An http(s) image goes through
``backend.media.fetch.fetch_image`` with ``QUORUM_IMAGE_FETCH_*`` (host allow-list, no
private / loopback / link-local address unless listed, size and time bounds, content
type declared and sniffed). A refused or failed download is never fatal: the item gets a
``failed`` row with the sentence why and is embedded and routed on its text.

Downloads of one batch run in parallel (``QUORUM_IMAGE_FETCH_WORKERS`` threads), each
bounded by ``QUORUM_IMAGE_FETCH_TIMEOUT_S``. Routing (``jobs.stages.route_staged``: the
job engine's ``route`` task, the in-process worker, ``?wait=true`` and ``quorum ingest``)
loads every image *before* the routing transaction (:func:`prefetch`: downloads, local
file reads and PDQ hashes, handed over with :func:`prefetched`), so no lock is held while
a remote server answers or an image decodes; anything not prefetched is loaded inline.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, sessionmaker

from backend.contextvalues import bound
from backend.db import in_values, read_only
from backend.errors import QuorumError
from backend.media.fetch import _sniff, fetch_image
from backend.media.models import FAILED, FETCHED, LOCAL, ItemImage
from backend.media.settings import ImageFetchSettings, get_image_fetch_settings

log = logging.getLogger("quorum.media")
REMOTE = ("http://", "https://")


@dataclass(frozen=True)
class LoadedImage:
    """One item's image as the embed stage got it (``content`` None when it failed)."""

    item_id: int
    ref: str
    state: str
    content: bytes | None = None
    content_type: str | None = None
    reason: str | None = None
    #: the PDQ hash (hex, quality) when computed before the routing transaction
    #: (``hashed``: it was; ``pdq`` None then means the image gave no hash)
    pdq: tuple[str, int] | None = None
    hashed: bool = False


def is_remote(ref: str | None) -> bool:
    return bool(ref) and str(ref).lower().startswith(REMOTE)


def _fetch_one(item_id: int, url: str, cfg: ImageFetchSettings) -> LoadedImage:
    try:
        got = fetch_image(url, policy=cfg.policy())
    except QuorumError as exc:
        return LoadedImage(item_id, url, FAILED, reason=exc.message)
    except Exception as exc:  # never fatal: the item is routed on its text
        log.exception("fetching the image of item %s failed unexpectedly", item_id)
        return LoadedImage(item_id, url, FAILED,
                           reason=f"the image could not be fetched ({type(exc).__name__})")
    return LoadedImage(item_id, url, FETCHED, got.content, got.content_type)


def fetch_remote(refs: Mapping[int, str], *, cfg: ImageFetchSettings | None = None
                 ) -> dict[int, LoadedImage]:
    """Download each item's http(s) image (``refs``: item id → URL) in parallel."""
    cfg = cfg or get_image_fetch_settings()
    if not refs:
        return {}
    if len(refs) == 1 or cfg.workers == 1:
        return {i: _fetch_one(i, url, cfg) for i, url in refs.items()}
    with ThreadPoolExecutor(max_workers=min(cfg.workers, len(refs)),
                            thread_name_prefix="quorum-image-fetch") as pool:
        futures = {i: pool.submit(_fetch_one, i, url, cfg) for i, url in refs.items()}
        return {i: f.result() for i, f in futures.items()}


def read_local(item_id: int, ref: str, *, max_bytes: int) -> LoadedImage:
    """An item's image from a file (a path or ``file://`` URL, as ``ml.inputs`` reads it)."""
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    path = Path(url2pathname(urlsplit(ref).path)) if ref.startswith("file://") else Path(ref)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return LoadedImage(item_id, ref, FAILED, reason=(
                f"the image file is {size:,} bytes; the limit is {max_bytes:,} "
                "(QUORUM_IMAGE_FETCH_MAX_BYTES)"))
        content = path.read_bytes()
    except OSError:
        return LoadedImage(item_id, ref, FAILED, reason="the image file could not be read "
                                                        "(it does not exist or is not a file)")
    kind = _sniff(content)
    if kind is None:
        return LoadedImage(item_id, ref, FAILED,
                           reason="the image file is not a JPEG, PNG, GIF or WebP image")
    return LoadedImage(item_id, ref, LOCAL, content, kind)


# ---------------------------------------------------------------- fetching before the txn
_PREFETCHED: contextvars.ContextVar[Mapping[tuple[int, str], LoadedImage] | None] = \
    contextvars.ContextVar("quorum_prefetched_images", default=None)


def prefetched(images: Mapping[tuple[int, str], LoadedImage]
               ) -> contextlib.AbstractContextManager[None]:
    """Within the block, :func:`load_images` uses these downloads (keyed by item id and
    URL) instead of fetching again."""
    return bound(_PREFETCHED, images)


def prefetch(*, sessions: sessionmaker[Session], item_ids: Sequence[int],
             cfg: ImageFetchSettings | None = None) -> dict[tuple[int, str], LoadedImage]:
    """The images of those of ``item_ids`` still waiting for routing, loaded outside any
    transaction (a short read first): http(s) ones downloaded (when a host is allowed),
    local files read, and each image's PDQ hash computed. Nothing is stored: the routing
    transaction records what it uses (``record``, ``hashes.matching.item_hashes``)."""
    from backend.decisions.models import ItemStatus
    from backend.hashes.settings import get_hash_settings
    from backend.items.models import Item
    from backend.ml_adapter.settings import get_ml_settings

    cfg = cfg or get_image_fetch_settings()
    embeds = get_ml_settings().enabled
    if not item_ids or not (embeds or get_hash_settings().enabled):
        return {}  # nothing is embedded or hashed
    refs: dict[int, str] = {}
    ids = sorted(set(item_ids))
    with read_only(sessions) as session:  # no write lock for a read (SQLite)
        for start in range(0, len(ids), 1000):
            refs.update((i, str(ref)) for i, ref in session.execute(
                select(Item.id, Item.image).join(ItemStatus, ItemStatus.item_id == Item.id)
                .where(in_values(session, Item.id, ids[start:start + 1000]),
                       ItemStatus.state == "received", Item.image.is_not(None), Item.image != "")))
    # with no host allowed, every URL is refused without a connection: left to the txn
    # (only the embed stage downloads: hash banks match local files and given hashes)
    remote = ({i: ref for i, ref in refs.items() if is_remote(ref)}
              if cfg.hosts and embeds else {})
    loaded = fetch_remote(remote, cfg=cfg)
    loaded.update((i, read_local(i, ref, max_bytes=cfg.max_bytes))
                  for i, ref in refs.items() if not is_remote(ref))
    return {(i, got.ref): _hashed(got) for i, got in loaded.items()}


def _hashed(im: LoadedImage) -> LoadedImage:
    if im.content is None:
        return im
    hex_, quality = _pdq(im.content)
    return replace(im, pdq=(hex_, int(quality)) if hex_ is not None and quality is not None
                   else None, hashed=True)


def ready_image(item_id: int, ref: Any) -> LoadedImage | None:
    """The image loaded for this item and reference before the routing transaction
    (`prefetch`, handed over with `prefetched`), if any."""
    if not ref:
        return None
    return (_PREFETCHED.get() or {}).get((int(item_id), str(ref)))


# ---------------------------------------------------------------- in the routing txn
def load_images(rows: Sequence[Mapping[str, Any]], *, cfg: ImageFetchSettings | None = None
                ) -> dict[int, LoadedImage]:
    """The image of each row that has one (``id``, ``image``): prefetched, fetched now, or
    read from its file."""
    cfg = cfg or get_image_fetch_settings()
    ready = _PREFETCHED.get() or {}
    out: dict[int, LoadedImage] = {}
    remote: dict[int, str] = {}
    for r in rows:
        ref = r.get("image")
        if not ref:
            continue
        item_id, ref = int(r["id"]), str(ref)
        if (item_id, ref) in ready:
            out[item_id] = ready[(item_id, ref)]
        elif is_remote(ref):
            remote[item_id] = ref
        else:
            out[item_id] = read_local(item_id, ref, max_bytes=cfg.max_bytes)
    out.update(fetch_remote(remote, cfg=cfg))
    return out


def _pdq(content: bytes) -> tuple[str | None, int | None]:
    try:
        from ml.hashes import pdq_hash
    except ImportError:  # pragma: no cover - pdqhash is a core dependency
        return None, None
    h = pdq_hash(content)
    return (h.hex, h.quality) if h is not None else (None, None)


def record(*, session: Session, images: Iterable[LoadedImage], now: datetime) -> None:
    """Store what was made of each image (replacing an item's earlier row), with the PDQ
    hash of every image that was read."""
    rows = []
    for im in images:
        if im.hashed:  # computed before the routing transaction
            pdq, quality = im.pdq if im.pdq is not None else (None, None)
        else:
            pdq, quality = _pdq(im.content) if im.content is not None else (None, None)
        rows.append({"item_id": im.item_id, "ref": im.ref[:4000], "state": im.state,
                     "reason": im.reason, "content_type": im.content_type,
                     "size": len(im.content) if im.content is not None else None,
                     "pdq_hash": pdq, "pdq_quality": quality, "fetched_at": now})
    if not rows:
        return
    ids = [r["item_id"] for r in rows]
    for start in range(0, len(ids), 1000):
        session.execute(delete(ItemImage).where(ItemImage.item_id.in_(ids[start:start + 1000])))
    session.execute(insert(ItemImage), rows)
    failed = sum(r["state"] == FAILED for r in rows)
    if failed:
        log.info("%d of %d item images were not loaded (see item_images.reason)", failed,
                 len(rows))


def image_record(*, session: Session, item_id: int) -> ItemImage | None:
    return session.get(ItemImage, item_id)
