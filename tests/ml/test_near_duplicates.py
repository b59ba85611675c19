"""Near-duplicate photos land next to each other, even with a random-init CLIP image tower.

Checked once on the seeded ViT-B-32: every variant below (resizes, JPEG re-encodes,
10%/20% crops) has a variant of its own photo as nearest neighbour; for resizes and
JPEG re-encodes every same-photo variant is also closer than any other photo.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ml.index import ExactIndex
from ml.similarity import decide_reuse
from tests.ml.conftest import photo

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"]


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def crop(image: Image.Image, margin: float) -> Image.Image:
    w, h = image.size
    return image.crop(
        (int(w * margin), int(h * margin), int(w * (1 - margin)), int(h * (1 - margin)))
    )


VARIANTS = {
    "original": lambda im: im,
    "half": lambda im: im.resize((im.width // 2, im.height // 2)),
    "thumb": lambda im: im.resize((160, 160 * im.height // im.width)),
    "jpeg30": lambda im: jpeg(im, 30),
    "jpeg70": lambda im: jpeg(im, 70),
    "crop10": lambda im: crop(im, 0.05),
    "crop20": lambda im: crop(im, 0.10),
}


@pytest.fixture(scope="module")
def embedded(clip_encoder):
    images, photos, variants = [], [], []
    for name in PHOTOS:
        original = photo(name)
        for variant, make in VARIANTS.items():
            images.append(make(original))
            photos.append(name)
            variants.append(variant)
    return clip_encoder.encode_images(images), np.array(photos), np.array(variants)


def test_nearest_neighbour_is_the_same_photo(embedded) -> None:
    vectors, photos, _ = embedded
    index = ExactIndex(dim=vectors.shape[1])
    index.add(np.arange(len(vectors)), vectors)
    ids, _ = index.search(vectors, 2)  # first hit is the query itself
    assert (ids[:, 0] == np.arange(len(vectors))).all()
    assert (photos[ids[:, 1]] == photos).all()


def test_resizes_and_jpeg_are_closer_than_any_other_photo(embedded) -> None:
    vectors, photos, variants = embedded
    keep = np.isin(variants, ["original", "half", "thumb", "jpeg30", "jpeg70"])
    v, p = vectors[keep], photos[keep]
    sims = v @ v.T
    same = p[:, None] == p[None, :]
    for row in range(len(v)):
        assert sims[row][same[row]].min() > sims[row][~same[row]].max()


def test_reuse_decision_on_a_re_encoded_duplicate(clip_encoder, embedded) -> None:
    vectors, photos, variants = embedded
    originals = variants == "original"
    index = ExactIndex(dim=vectors.shape[1])
    index.add(np.flatnonzero(originals), vectors[originals])
    labels = {
        int(i): ("adult" if photos[i] == "chelsea" else "ok") for i in np.flatnonzero(originals)
    }
    query = clip_encoder.encode_images([jpeg(photo("chelsea").resize((300, 225)), 50)])
    ids, dist = index.search(query, 3)
    # random weights squeeze all photos into a narrow cone, so the distance is tiny
    decision = decide_reuse(ids[0], dist[0], labels, reuse_distance=float(dist[0, 0]) + 1e-6)
    assert (decision.kind, decision.label) == ("reuse", "adult")
