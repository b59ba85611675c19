"""PDQ perceptual hashes: near-duplicates of bundled photos match, other photos do not."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ml.hashes import (
    HashBank,
    ImageHash,
    hamming,
    hamming_matrix,
    hex_to_words,
    pdq_hash,
    pdq_hash_variants,
    words_to_hex,
)
from tests.ml.conftest import photo

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera",
          "coins", "hubble_deep_field", "moon", "cell"]
MATCH = 31  # Meta's suggested PDQ match distance


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def centre_crop(image: Image.Image, margin: float) -> Image.Image:
    w, h = image.size
    return image.crop((int(w * margin), int(h * margin), int(w * (1 - margin)),
                       int(h * (1 - margin))))


TRANSFORMS = {
    "half": lambda im: im.resize((im.width // 2, im.height // 2)),
    "thumb": lambda im: im.resize((200, 200 * im.height // im.width)),
    "jpeg30": lambda im: jpeg(im, 30),
    "jpeg70": lambda im: jpeg(im, 70),
    "crop3": lambda im: centre_crop(im, 0.03),
    "crop7": lambda im: centre_crop(im, 0.07),
    "crop12": lambda im: centre_crop(im, 0.12),
}


@pytest.fixture(scope="module")
def bank() -> HashBank:
    bank = HashBank()
    for i, name in enumerate(PHOTOS):
        variants = pdq_hash_variants(photo(name))
        bank.add([i] * len(variants), np.stack([h.words for h in variants]))
    return bank


def test_hash_text_round_trips_and_distance_counts_bits() -> None:
    h = pdq_hash(photo("astronaut"))
    assert isinstance(h, ImageHash) and len(h.hex) == 64 and h.quality == 100
    assert words_to_hex(hex_to_words([h.hex])) == [h.hex]
    flipped = hex_to_words([h.hex])
    flipped[0, 0] ^= np.uint64(0b1011)  # three bits differ
    assert hamming(hex_to_words([h.hex]), flipped).tolist() == [3]
    with pytest.raises(ValueError, match="64 hex digits"):
        hex_to_words(["abc"])


def test_unreadable_image_has_no_hash() -> None:
    assert pdq_hash(b"not an image") is None
    assert pdq_hash_variants(b"not an image") == []


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_near_duplicates_match_their_own_photo_only(bank: HashBank, transform: str) -> None:
    for i, name in enumerate(PHOTOS):
        query = pdq_hash(TRANSFORMS[transform](photo(name)))
        matches = bank.match(query.words[None], max_distance=MATCH, k=3)[0]
        assert [m.id for m in matches] == [i], (name, transform, matches)


def test_different_photos_are_far_apart() -> None:
    words = np.stack([pdq_hash(photo(name)).words for name in PHOTOS])
    d = hamming_matrix(words, words)
    off = d[~np.eye(len(PHOTOS), dtype=bool)]
    assert off.min() > 3 * MATCH  # nothing near a false match among distinct photos


def test_an_off_centre_crop_is_not_matched(bank: HashBank) -> None:
    """PDQ's known limit (documented in docs/ml.md): a shifted crop changes the hash."""
    im = photo("astronaut")
    w, h = im.size
    shifted = im.crop((int(w * 0.13), int(h * 0.1), int(w * 0.93), int(h * 0.9)))
    assert bank.match(pdq_hash(shifted).words[None], max_distance=MATCH)[0] == []


def test_bank_matches_nearest_first_dedupes_ids_and_saves(tmp_path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**63, size=(1000, 4), dtype=np.uint64)
    bank = HashBank(chunk=128).add(np.arange(1000), words)
    near = words[10].copy()
    near[1] ^= np.uint64(1)  # 1 bit from id 10
    bank.add([2000, 10], np.stack([near, near]))  # id 10 twice: matched once, at 0
    found = bank.match(np.stack([near, words[500]]), max_distance=5, k=5)
    assert [(m.id, m.distance) for m in found[0]] == [(2000, 0), (10, 0)]  # ties: added first
    assert [(m.id, m.distance) for m in found[1]] == [(500, 0)]
    again = HashBank.load(bank.save(tmp_path / "bank.npz"))
    assert len(again) == 1002
    assert again.match(near[None], max_distance=5) == found[:1]
    assert HashBank().match(near[None]) == [[]]
    with pytest.raises(ValueError, match="max_distance"):
        bank.match(near[None], max_distance=300)


@pytest.mark.parametrize("max_distance", [0, 15, 31, 47, 80])
def test_indexed_matching_finds_exactly_what_a_full_scan_finds(max_distance: int) -> None:
    rng = np.random.default_rng(max_distance)
    words = rng.integers(0, 2**63, size=(3000, 4), dtype=np.uint64)
    queries = words[:60].copy()
    for row, n_flips in zip(queries, rng.integers(0, 70, size=60), strict=True):
        for bit in rng.choice(256, size=n_flips, replace=False):
            row[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    bank = HashBank().add(np.arange(3000), words)
    found = bank.match(queries, max_distance=max_distance, k=3000)
    for q, matches in zip(queries, found, strict=True):
        d = bank.distances(q)
        expected = sorted((int(d[i]), i) for i in np.flatnonzero(d <= max_distance))
        assert [(m.distance, m.id) for m in matches] == expected
