"""Hash banks through the product path: import, then routing items with photos against it.

Run from the repository root (SQLite in a temporary directory; nothing else touched)::

    .venv/bin/python bench/hash_routing.py                 # 1,000,000 banked hashes
    .venv/bin/python bench/hash_routing.py --bank 100000 --items 200

1. ``import_hashes``: N random PDQ hashes plus the banked photos' own (with their
   centred-crop variants) into one bank: hashes per second.
2. Routing (``route_items``) of items whose images are transformed copies of the banked
   photos (and of other photos): the first batch builds the in-process bank index from
   the database; the next one reuses it. Printed: seconds per batch, ms per item, and
   how many near-duplicates matched (recall) and how many others matched (false matches).
Figures depend on the machine's load (it is shared); the script prints what it ran on.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BAD = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"]
OTHER = ["camera", "coins", "moon", "hubble_deep_field", "cell"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bank", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=100, help="items per routing batch")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="quorum-hashbench-"))
    os.environ.update({"QUORUM_DATABASE_URL": f"sqlite:///{tmp / 'q.sqlite3'}",
                       "QUORUM_DATA_DIR": str(tmp / "var"), "QUORUM_ML_ENABLED": "false"})
    from PIL import Image
    from sqlalchemy import select

    from backend.db import session_scope, utcnow
    from backend.decisions.models import DecisionEvent
    from backend.hashes.matching import match_banks
    from backend.hashes.models import ItemHash
    from backend.hashes.service import import_hashes
    from backend.items.service import ingest
    from backend.migrate import upgrade
    from backend.policy import get_policy
    from backend.routing.models import ShadowOutcome
    from backend.routing.pipeline import route_items
    from backend.settings import get_settings
    from ml.hashes import pdq_hash_variants, words_to_hex

    def photo(name: str) -> Image.Image:
        from skimage import data

        a = getattr(data, name)()
        if a.ndim == 2:
            a = np.stack([a] * 3, axis=-1)
        return Image.fromarray(a).convert("RGB")

    def jpeg(im: Image.Image, q: int) -> Image.Image:
        b = io.BytesIO()
        im.save(b, format="JPEG", quality=q)
        return Image.open(io.BytesIO(b.getvalue())).convert("RGB")

    def crop(im: Image.Image, m: float) -> Image.Image:
        w, h = im.size
        return im.crop((int(w * m), int(h * m), int(w * (1 - m)), int(h * (1 - m))))

    variants = [lambda im: im.resize((im.width // 2, im.height // 2)),
                lambda im: jpeg(im, 40), lambda im: crop(im, 0.05),
                lambda im: jpeg(crop(im, 0.08), 60)]
    url = os.environ["QUORUM_DATABASE_URL"]
    upgrade(url)
    settings, policy = get_settings(), get_policy()
    rng = np.random.default_rng(0)
    random_hex = words_to_hex(rng.integers(0, 2**63, size=(args.bank, 4), dtype=np.uint64)
                              * np.uint64(2) + rng.integers(0, 2, size=(args.bank, 4),
                                                            dtype=np.uint64))
    own = [h.hex for n in BAD for h in pdq_hash_variants(photo(n))]
    t = time.perf_counter()
    with session_scope(url) as s:
        import_hashes(session=s, bank="known-bad", label="prohibited", policy=policy,
                      hashes=[(h, None) for h in random_hex + own], now=utcnow())
    dt = time.perf_counter() - t
    print(f"machine: {os.cpu_count()} cores (shared with other sessions; figures are "
          f"under load)\nimport: {len(random_hex) + len(own):,} hashes in {dt:.1f} s "
          f"({(len(random_hex) + len(own)) / dt:,.0f}/s)")
    images = tmp / "var" / "img"
    images.mkdir(parents=True)
    for batch in (1, 2):
        rows, near = [], set()
        for i in range(args.items):
            name = (BAD + OTHER)[i % 10]
            im = variants[(i // 10) % len(variants)](photo(name))
            path = images / f"b{batch}-{i}.png"
            im.save(path)
            ext = f"b{batch}-{i}"
            rows.append({"source": "bench", "external_id": ext, "title": name,
                         "image": str(path)})
            if name in BAD:
                near.add(ext)
        with session_scope(url) as s:
            now = utcnow()
            _, ids = ingest(session=s, rows=rows, policy=policy, now=now)
            t = time.perf_counter()
            route_items(session=s, item_ids=ids, now=now, settings=settings)
            dt = time.perf_counter() - t
            ext_of = dict(zip(ids, [r["external_id"] for r in rows], strict=True))
            matched = {ext_of[i] for i in s.scalars(select(ShadowOutcome.item_id).where(
                ShadowOutcome.source == "hash", ShadowOutcome.item_id.in_(ids)))}
            decided = s.scalar(select(DecisionEvent.id).limit(1))
            hashes = dict(s.execute(select(ItemHash.item_id, ItemHash.hash)
                                    .where(ItemHash.item_id.in_(ids))).tuples().all())
            t = time.perf_counter()
            match_banks(session=s, hashes=hashes)
            dm = time.perf_counter() - t
        print(f"routing batch {batch} ({'builds the bank index' if batch == 1 else 'index cached'}"
              f"): {len(ids)} items in {dt:.2f} s ({1000 * dt / len(ids):.1f} ms/item, PDQ of "
              f"each image included); near-duplicates matched {len(matched & near)}/{len(near)},"
              f" other photos matched {len(matched - near)}/{len(ids) - len(near)}; "
              f"decided: {'yes' if decided else 'none (unbacked: shadow)'}; bank matching "
              f"alone (index cached): {1000 * dm / max(len(hashes), 1):.2f} ms/item")


if __name__ == "__main__":
    main()
