"""The expensive work of routing runs before the routing transaction, never while holding
a lock other requests need (issue 10 item 5, issue 11 "Embed + score"): the encoder, the
image reads and their PDQ hashes. The routing transaction stores what was prepared only
where the item's inputs are unchanged; anything else it computes itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, update

from backend.db import get_sessionmaker, session_scope, utcnow
from backend.decisions.models import ItemStatus
from backend.hashes.models import ItemHash
from backend.items.models import Item, ItemEmbedding
from backend.items.service import ingest
from backend.jobs import stages
from backend.media.images import prefetch, prefetched
from backend.media.models import ItemImage
from backend.ml_adapter.service import get_encoder, prepare_embeddings, prepared_vectors
from ml.encoders import HashingEncoder
from tests.backend.test_routing_staged import _write_from_elsewhere
from tests.conftest import item_row
from tests.ml.conftest import photo


def _ingest(settings, policy, rows) -> list[int]:  # noqa: ANN001
    with session_scope(settings.resolved_database_url) as s:
        _, ids = ingest(session=s, rows=rows, policy=policy)
    return ids


def _vectors(url: str) -> dict[int, np.ndarray]:
    with session_scope(url) as s:
        return {i: np.frombuffer(v, dtype=np.float32) for i, v in s.execute(
            select(ItemEmbedding.item_id, ItemEmbedding.vector)).tuples()}


def test_the_encoder_runs_while_other_writers_go_on(settings, policy, ml_on, monkeypatch):  # noqa: ANN001
    url = settings.resolved_database_url
    ids = _ingest(settings, policy, [item_row(i, title=f"Garden chair {i}") for i in range(4)])
    seen: list[str] = []
    encoded: list[int] = []
    encode = HashingEncoder.encode

    def spying(self: HashingEncoder, items: Any, **kw: Any) -> Any:
        items = list(items)
        encoded.append(len(items))
        if not seen:  # while the encoder runs: can another request write this item?
            seen.append(_write_from_elsewhere(url, ids[0]))
        return encode(self, items, **kw)

    monkeypatch.setattr(HashingEncoder, "encode", spying)
    summary = stages.route_staged(sessions=get_sessionmaker(url), item_ids=ids,
                                  settings=settings)
    assert seen == ["ok"]  # old code: "OperationalError" (locked / lock not available)
    assert summary.items == 4
    assert sum(encoded) == 4  # each item encoded once, before the transaction; not twice
    assert set(_vectors(url)) == set(ids)
    with session_scope(url) as s:
        states = set(s.scalars(select(ItemStatus.state).where(ItemStatus.item_id.in_(ids))))
    assert "received" not in states


def test_an_item_changed_after_encoding_is_encoded_again(settings, policy, ml_on):  # noqa: ANN001
    url = settings.resolved_database_url
    ids = _ingest(settings, policy, [item_row(1, title="Oak table"),
                                     item_row(2, title="Steel kettle")])
    factory = get_sessionmaker(url)
    ready = prepare_embeddings(sessions=factory, item_ids=ids)
    enc = get_encoder()
    assert {k[0] for k in ready} == set(ids)
    with session_scope(url) as s:  # re-ingested with new content after it was encoded
        s.execute(update(Item).where(Item.id == ids[1]).values(title="Brass knuckles"))
    with prepared_vectors(ready), session_scope(url) as s:
        stages.route_received(session=s, item_ids=ids, now=utcnow(), settings=settings)
    stored = _vectors(url)
    assert np.allclose(stored[ids[0]], ready[(ids[0], enc.encoder_id)][1])
    from ml.inputs import ItemInput

    with session_scope(url) as s:
        desc = s.get(Item, ids[1]).description or ""
    fresh = enc.encode([ItemInput(title="Brass knuckles", description=desc)])[0]
    assert np.allclose(stored[ids[1]], fresh)  # the new title's vector, not the old one
    assert not np.allclose(stored[ids[1]], ready[(ids[1], enc.encoder_id)][1])


def test_images_are_read_and_hashed_before_the_transaction(settings, policy, ml_on,  # noqa: ANN001
                                                           monkeypatch):
    import backend.media.images as media
    import ml.hashes

    url = settings.resolved_database_url
    d = settings.data_dir / "images"
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("astronaut", "coffee"):
        path = d / f"{name}.png"
        photo(name).save(path)
        paths.append(str(path))
    ids = _ingest(settings, policy, [item_row(i, title=f"photo {i}", image=p)
                                     for i, p in enumerate(paths)])
    seen: list[str] = []
    pdq = ml.hashes.pdq_hash

    def spying(image: Any) -> Any:
        if not seen:  # while an image is hashed: can another request write this item?
            seen.append(_write_from_elsewhere(url, ids[0]))
        return pdq(image)

    monkeypatch.setattr(ml.hashes, "pdq_hash", spying)
    images = prefetch(sessions=get_sessionmaker(url), item_ids=ids)
    assert {k[0] for k, im in images.items() if im.hashed and im.pdq} == set(ids)
    n_hashed = len(seen)
    # inside the transaction nothing is hashed again: the prepared hashes are stored
    monkeypatch.setattr(ml.hashes, "pdq_hash", lambda image: pytest.fail("hashed twice"))
    monkeypatch.setattr(media, "_pdq", lambda content: pytest.fail("hashed twice"))
    with prefetched(images), session_scope(url) as s:
        stages.route_received(session=s, item_ids=ids, now=utcnow(), settings=settings)
    assert seen == ["ok"] and n_hashed == 1  # old code: hashed inside the transaction
    with session_scope(url) as s:
        rows = {r.item_id: r for r in s.scalars(select(ItemImage))}
        hashes = dict(s.execute(select(ItemHash.item_id, ItemHash.hash)).tuples().all())
    for i in ids:
        hex_ = next(im.pdq[0] for k, im in images.items() if k[0] == i)
        assert rows[i].state == "local" and rows[i].pdq_hash == hex_
        assert hashes[i] == hex_  # the hash bank's hash is the same one


def test_the_whole_staged_path_routes_images_the_same(settings, policy, ml_on):  # noqa: ANN001
    """Prepared or not, the stored vectors and hashes are the same (the prepared path is
    an optimisation, not a second behaviour)."""
    url = settings.resolved_database_url
    d = settings.data_dir / "images"
    d.mkdir(parents=True, exist_ok=True)
    path = d / "chelsea.png"
    photo("chelsea").save(path)
    a, b = _ingest(settings, policy, [item_row(1, title="cat", image=str(path)),
                                      item_row(2, title="cat", image=str(path))])
    stages.route_staged(sessions=get_sessionmaker(url), item_ids=[a], settings=settings)
    with session_scope(url) as s:  # b routed inside one transaction, nothing prepared
        stages.route_received(session=s, item_ids=[b], now=utcnow(), settings=settings)
    stored = _vectors(url)
    assert np.allclose(stored[a], stored[b])
    with session_scope(url) as s:
        h = dict(s.execute(select(ItemHash.item_id, ItemHash.hash)).tuples().all())
        im = dict(s.execute(select(ItemImage.item_id, ItemImage.pdq_hash)).tuples().all())
    assert h[a] == h[b] and im[a] == im[b] == h[a]
