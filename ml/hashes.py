"""Perceptual image hashes (PDQ) as a weightless similarity signal.

No CLIP weights can be installed on these machines, so without them images are not
compared at all. PDQ (Meta's perceptual hash, the one ThreatExchange / HMA use; the
``pdqhash`` bindings of the reference C++ code) needs no weights: a 256-bit hash of
the image's luminance structure that survives resizes, re-encodes and mild crops.
Two images are near-duplicates when the Hamming distance of their hashes is small
(Meta suggests <= 31 of 256 for matching; calibrate your own on labelled pairs).

- :func:`pdq_hash` / :func:`pdq_hashes`: an image (anything ``ml.inputs.load_image``
  takes) → :class:`ImageHash` (256 bits packed as 32 bytes, and PDQ's quality 0-100;
  low quality (< 50) means a flat image whose hash says little);
- :func:`hamming` / :func:`hamming_matrix`: distances between packed hashes;
- :class:`HashBank`: a bank of known hashes (e.g. known-bad images, or every decided
  item's image) with batched matching: ``match(queries, max_distance)`` returns, per
  query, the banked ids within the distance, nearest first. Hashes are kept as four
  ``uint64`` words per row. Matching within ``max_distance <= 47`` uses multi-index
  hashing (Norouzi et al.): split into 16 chunks of 16 bits, a hash within distance
  ``d`` of the query agrees with it to within ``d // 16`` bits on at least one chunk
  (pigeonhole), so only the banked hashes found by those chunk lookups (sorted chunk
  values, ``numpy.searchsorted``) get the exact distance (XOR + ``numpy.bitwise_count``);
  wider searches scan the bank. Exact either way; figures at 1,000,000 hashes in
  ``bench/hashes.py``. Saved as ``.npz`` (ids, words) without pickle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from ml.inputs import ImageLike, load_image

__all__ = [
    "BITS",
    "HashBank",
    "HashMatch",
    "ImageHash",
    "hamming",
    "hamming_matrix",
    "hex_to_words",
    "pdq_hash",
    "pdq_hash_variants",
    "pdq_hashes",
    "words_to_hex",
]

BITS = 256
WORDS = BITS // 64
_CHUNKS = 16  # multi-index hashing: 16 chunks of 16 bits


def _flip_masks(radius: int) -> np.ndarray:
    """Every 16-bit mask with at most ``radius`` bits set."""
    from itertools import combinations

    masks = [0]
    for r in range(1, radius + 1):
        masks += [sum(1 << b for b in bits) for bits in combinations(range(16), r)]
    return np.asarray(masks, dtype=np.uint16)


_FLIPS = [_flip_masks(r) for r in range(3)]  # chunk radius 0, 1, 2: max_distance <= 47


@dataclass(frozen=True, slots=True)
class ImageHash:
    """A PDQ hash: ``hex`` (64 hex digits, PDQ's usual text form) and ``quality``."""

    hex: str
    quality: int

    @property
    def words(self) -> np.ndarray:
        return hex_to_words([self.hex])[0]


def hex_to_words(hexes: Iterable[str]) -> np.ndarray:
    """``[n, 4]`` uint64 words of 64-hex-digit hashes (raises ``ValueError`` on bad text)."""
    rows = []
    for h in hexes:
        h = str(h).strip().lower()
        if len(h) != BITS // 4:
            raise ValueError(f"a PDQ hash is {BITS // 4} hex digits, got {len(h)}: {h[:70]!r}")
        try:
            rows.append([int(h[i:i + 16], 16) for i in range(0, BITS // 4, 16)])
        except ValueError as exc:
            raise ValueError(f"not a hex hash: {h!r}") from exc
    return np.asarray(rows, dtype=np.uint64).reshape(-1, WORDS)


def words_to_hex(words: np.ndarray) -> list[str]:
    return ["".join(f"{int(w):016x}" for w in row) for row in np.asarray(words, np.uint64)]


def _bits_to_hex(bits: np.ndarray) -> str:
    packed = np.packbits(np.asarray(bits, dtype=np.uint8))  # 32 bytes, most significant first
    return packed.tobytes().hex()


def pdq_hash(image: ImageLike) -> ImageHash | None:
    """The PDQ hash of one image, or ``None`` when it cannot be loaded."""
    import pdqhash

    pil = load_image(image)
    if pil is None:
        return None
    bits, quality = pdqhash.compute(np.ascontiguousarray(np.asarray(pil, dtype=np.uint8)))
    return ImageHash(hex=_bits_to_hex(bits), quality=int(quality))


#: Centred crops banked beside the whole image: PDQ survives resizes and re-encodes but
#: not crops (a 5% crop moves the hash ~90 bits); banking the image's own centred crops
#: brings a centred crop of 3-12% back within ~20 bits. Off-centre crops stay unmatched.
CROP_MARGINS = (0.025, 0.05, 0.075, 0.10, 0.125, 0.15)


def pdq_hash_variants(image: ImageLike, *, margins: Sequence[float] = CROP_MARGINS
                      ) -> list[ImageHash]:
    """The hash of the whole image and of its centred crops (``margins`` per side), for
    banking: a query then matches a centred crop of the banked image. Empty when the
    image cannot be loaded."""
    pil = load_image(image)
    if pil is None:
        return []
    out = [pdq_hash(pil)]
    w, h = pil.size
    for m in margins:
        if not 0 < m < 0.5:
            raise ValueError(f"crop margin must be in (0, 0.5), got {m}")
        out.append(pdq_hash(pil.crop((int(w * m), int(h * m), int(w * (1 - m)),
                                      int(h * (1 - m))))))
    return [h_ for h_ in out if h_ is not None]


def pdq_hashes(images: Sequence[ImageLike | None]) -> list[ImageHash | None]:
    """:func:`pdq_hash` of each image (``None`` for a missing or unreadable one)."""
    return [None if image is None else pdq_hash(image) for image in images]


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between rows of ``a`` and ``b`` (``[n, 4]`` uint64, broadcast)."""
    x = np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))
    return np.bitwise_count(x).sum(axis=-1, dtype=np.int32)


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` Hamming distances."""
    a, b = np.asarray(a, np.uint64), np.asarray(b, np.uint64)
    return hamming(a[:, None, :], b[None, :, :])


@dataclass(frozen=True, slots=True)
class HashMatch:
    """A banked hash within the distance of a query."""

    id: int
    distance: int


class HashBank:
    """Known hashes with integer ids, matched by Hamming distance.

    ``add(ids, words)`` appends (``words`` from :func:`hex_to_words` or
    ``ImageHash.words``); ``match(queries, max_distance=31, k=5)`` returns for each
    query row the nearest ``k`` banked ids within ``max_distance``. An id may be added
    with several hashes (:func:`pdq_hash_variants`); it is matched once, at its nearest
    hash. Learned/stored:
    ``ids_`` (int64), ``words_`` (``[n, 4]`` uint64).
    """

    def __init__(self, *, chunk: int = 262_144) -> None:
        self.chunk = chunk
        self.ids_ = np.zeros(0, dtype=np.int64)
        self.words_ = np.zeros((0, WORDS), dtype=np.uint64)
        self._tables: list[tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.ids_)

    def add(self, ids: Sequence[int] | np.ndarray, words: np.ndarray) -> Self:
        ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        words = np.asarray(words, dtype=np.uint64).reshape(-1, WORDS)
        if len(ids_arr) != len(words):
            raise ValueError(f"{len(ids_arr)} ids for {len(words)} hashes")
        self.ids_ = np.concatenate([self.ids_, ids_arr])
        self.words_ = np.concatenate([self.words_, words])
        self._tables = None
        return self

    @staticmethod
    def _chunks(words: np.ndarray) -> np.ndarray:
        """``[n, 16]`` uint16: the 16-bit chunks of each hash, most significant first."""
        w = np.asarray(words, dtype=np.uint64).reshape(-1, WORDS)
        shifts = np.array([48, 32, 16, 0], dtype=np.uint64)
        parts = (w[:, :, None] >> shifts[None, None, :]) & np.uint64(0xFFFF)
        return parts.reshape(len(w), _CHUNKS).astype(np.uint16)

    def _index(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._tables is None:
            chunks = self._chunks(self.words_)
            tables = []
            for c in range(_CHUNKS):
                order = np.argsort(chunks[:, c], kind="stable")
                tables.append((chunks[order, c], order))
            self._tables = tables
        return self._tables

    def _candidates(self, query: np.ndarray, radius: int) -> np.ndarray:
        """Rows whose chunk ``c`` is within ``radius`` bits of the query's, for some ``c``."""
        flips = _FLIPS[radius]
        q_chunks = self._chunks(query)[0]
        found = []
        for c, (values, order) in enumerate(self._index()):
            keys = q_chunks[c] ^ flips  # distinct: XOR with distinct masks
            lo = np.searchsorted(values, keys, side="left")
            hi = np.searchsorted(values, keys, side="right")
            found.extend(order[a:b] for a, b in zip(lo.tolist(), hi.tolist(), strict=True)
                         if b > a)
        if not found:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(found))

    def distances(self, query: np.ndarray) -> np.ndarray:
        """Distances from one query (4 words) to every banked hash."""
        q = np.asarray(query, dtype=np.uint64).reshape(1, WORDS)
        out = np.empty(len(self), dtype=np.int32)
        for start in range(0, len(self), self.chunk):
            out[start:start + self.chunk] = hamming(self.words_[start:start + self.chunk], q)
        return out

    def match(self, queries: np.ndarray, *, max_distance: int = 31,
              k: int = 5) -> list[list[HashMatch]]:
        """Per query, up to ``k`` banked hashes with distance <= ``max_distance``,
        nearest first (ties: the earlier added)."""
        if not 0 <= max_distance <= BITS:
            raise ValueError(f"max_distance must be in [0, {BITS}]")
        queries = np.asarray(queries, dtype=np.uint64).reshape(-1, WORDS)
        out: list[list[HashMatch]] = []
        for q in queries:
            if len(self) == 0:
                out.append([])
                continue
            if max_distance // _CHUNKS < len(_FLIPS):
                rows = self._candidates(q, max_distance // _CHUNKS)
                d_rows = hamming(self.words_[rows], q[None, :])
                keep = d_rows <= max_distance
                hit, dist = rows[keep], d_rows[keep]
            else:
                d = self.distances(q)
                hit = np.flatnonzero(d <= max_distance)
                dist = d[hit]
            order = np.lexsort((hit, dist))  # nearest first, then the earlier added
            hit, dist = hit[order], dist[order]
            found: list[HashMatch] = []
            seen: set[int] = set()
            for i, di in zip(hit.tolist(), dist.tolist(), strict=True):
                item = int(self.ids_[i])
                if item not in seen:
                    seen.add(item)
                    found.append(HashMatch(id=item, distance=int(di)))
                    if len(found) == k:
                        break
            out.append(found)
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, ids=self.ids_, words=self.words_)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Self:
        with np.load(path, allow_pickle=False) as data:
            return cls().add(data["ids"], data["words"])
