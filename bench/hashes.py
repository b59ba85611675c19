"""PDQ near-duplicate recall, false-match rate, and hash-bank matching speed.

Run from the repository root::

    .venv/bin/python bench/hashes.py              # photos + 1,000,000-hash bank
    .venv/bin/python bench/hashes.py --bank 100000

1. Photos: the colour and grey photos scikit-image ships (no download). Each is banked
   with its centred-crop variants (``ml.hashes.pdq_hash_variants``); queries are
   transformed copies (resizes, JPEG re-encodes, centred and shifted crops, a small
   rotation, brightness). Recall at Hamming distance <= D: share of queries whose own
   photo is matched; false-match rate: share of (query, other photo) pairs matched.
   Distinct photos are also compared with each other.
2. Speed: a bank of N random 256-bit hashes plus the photos' own; queries are the
   transformed photos; we time ``HashBank.match`` (XOR + popcount over the bank).
Figures depend on the machine's load (it is shared); the script prints what it ran on.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ml.hashes import HashBank, hamming_matrix, pdq_hash, pdq_hash_variants  # noqa: E402

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera",
          "coins", "moon", "page", "text", "hubble_deep_field", "retina", "brick", "grass",
          "gravel", "cell", "microaneurysms", "motorcycle_left", "logo", "horse"]
DISTANCES = (16, 24, 31, 40)
SEED = 0


def photo(name: str) -> Image.Image:
    from skimage import data

    left = name == "motorcycle_left"
    array = data.stereo_motorcycle()[0] if left else getattr(data, name)()
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(np.asarray(array[..., :3], dtype=np.uint8)).convert("RGB")


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    im.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def crop(im: Image.Image, margin: float, shift: float = 0.0) -> Image.Image:
    w, h = im.size
    return im.crop((int(w * (margin + shift)), int(h * margin), int(w * (1 - margin + shift)),
                    int(h * (1 - margin))))


TRANSFORMS = {
    "resize 50%": lambda im: im.resize((im.width // 2, im.height // 2)),
    "thumbnail 200px": lambda im: im.resize((200, max(1, 200 * im.height // im.width))),
    "jpeg q30": lambda im: jpeg(im, 30),
    "jpeg q70": lambda im: jpeg(im, 70),
    "centred crop 3%": lambda im: crop(im, 0.03),
    "centred crop 7%": lambda im: crop(im, 0.07),
    "centred crop 12%": lambda im: crop(im, 0.12),
    "shifted crop 5%+2%": lambda im: crop(im, 0.05, 0.02),
    "rotate 3 deg": lambda im: im.rotate(3, expand=False),
    "brightness +20%": lambda im: ImageEnhance.Brightness(im).enhance(1.2),
}


def photos_quality() -> None:
    originals = {name: photo(name) for name in PHOTOS}
    bank = HashBank()
    for i, name in enumerate(PHOTOS):
        variants = pdq_hash_variants(originals[name])
        bank.add([i] * len(variants), np.stack([h.words for h in variants]))
    whole = np.stack([pdq_hash(originals[n]).words for n in PHOTOS])
    d = hamming_matrix(whole, whole)[~np.eye(len(PHOTOS), dtype=bool)]
    print(f"{len(PHOTOS)} bundled photos, banked with {len(bank) // len(PHOTOS) - 1} centred "
          f"crops each; distance between distinct photos: min {d.min()}, 1st percentile "
          f"{np.percentile(d, 1):.0f}, median {np.median(d):.0f} (of 256 bits)")
    header = "transform".ljust(22) + "".join(f"recall@{t:<4}" for t in DISTANCES) + \
        "".join(f"false@{t:<5}" for t in DISTANCES)
    print(header)
    totals = {t: [0, 0, 0, 0] for t in DISTANCES}  # hits, queries, false, pairs
    for name, transform in TRANSFORMS.items():
        recall, false = [], []
        for t in DISTANCES:
            hits = fm = 0
            for i, photo_name in enumerate(PHOTOS):
                q = pdq_hash(transform(originals[photo_name])).words
                found = {m.id for m in bank.match(q[None], max_distance=t, k=len(PHOTOS))[0]}
                hits += i in found
                fm += len(found - {i})
            pairs = len(PHOTOS) * (len(PHOTOS) - 1)
            recall.append(hits / len(PHOTOS))
            false.append(fm / pairs)
            totals[t][0] += hits
            totals[t][1] += len(PHOTOS)
            totals[t][2] += fm
            totals[t][3] += pairs
        print(name.ljust(22) + "".join(f"{r:<11.0%}" for r in recall)
              + "".join(f"{f:<11.2%}" for f in false))
    print("all".ljust(22) + "".join(f"{v[0] / v[1]:<11.0%}" for v in totals.values())
          + "".join(f"{v[2] / v[3]:<11.2%}" for v in totals.values()))


def bank_speed(n: int, queries: int) -> None:
    rng = np.random.default_rng(SEED)
    words = rng.integers(0, 2**63, size=(n, 4), dtype=np.uint64) * np.uint64(2) + \
        rng.integers(0, 2, size=(n, 4), dtype=np.uint64)
    bank = HashBank().add(np.arange(n), words)
    originals = [photo(name) for name in PHOTOS[:5]]
    for i, im in enumerate(originals):
        bank.add([n + i], pdq_hash(im).words[None])
    q = np.stack([pdq_hash(jpeg(originals[i % 5], 50)).words for i in range(queries)])
    started = time.perf_counter()
    bank.match(q[:1], max_distance=31)  # builds the chunk index
    print(f"chunk index of {len(bank):,} hashes built in {time.perf_counter() - started:.2f} s")
    started = time.perf_counter()
    found = bank.match(q, max_distance=31)
    elapsed = time.perf_counter() - started
    right = sum(bool(f) and f[0].id == n + (i % 5) for i, f in enumerate(found))
    print(f"bank of {len(bank):,} hashes ({bank.words_.nbytes / 2**20:.0f} MiB): {queries} "
          f"queries in {elapsed:.2f} s = {elapsed / queries * 1000:.1f} ms per query, "
          f"{queries / elapsed:.0f} queries/s on one core; {right}/{queries} found their "
          "photo first")
    started = time.perf_counter()
    for row in q[:20]:
        bank.distances(row)
    scan = (time.perf_counter() - started) / 20
    print(f"a full scan of the bank (no index) takes {scan * 1000:.1f} ms per query")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          "(shared with other work: timings are noisy)")
    photos_quality()
    bank_speed(args.bank, args.queries)


if __name__ == "__main__":
    main()
