"""Shared data for the ML benchmarks: generated listings and realistic vectors.

Vectors are "realistic" in the sense that matters for HNSW: they are MiniLM encodings
of generated marketplace titles (anisotropic, clustered by topic), not uniform noise.
To reach 1M without encoding 1M texts on 2 cores, ``n_base`` generated texts are
encoded once, then each further vector is synthesised as::

    normalize(base[a] + 0.3 * base[b] + 0.4 * g),   g ~ N(0, I / dim)

(``a`` a topic, ``b`` another base mixed in; cosine to its topic ≈ 0.85).
Near-duplicate queries are indexed vectors plus small noise (``0.15 * g``, cosine ≈ 0.99
to their source). Everything is cached under ``var/bench/``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("QUORUM_BENCH_CACHE", "var/bench"))

_ADJ = [
    "cheap",
    "new",
    "used",
    "vintage",
    "genuine",
    "original",
    "replica",
    "premium",
    "luxury",
    "handmade",
    "mini",
    "large",
    "small",
    "portable",
    "wireless",
    "waterproof",
    "organic",
    "limited",
    "rare",
    "classic",
    "modern",
]
_COLOUR = [
    "red",
    "blue",
    "green",
    "black",
    "white",
    "silver",
    "gold",
    "pink",
    "purple",
    "brown",
    "grey",
    "orange",
]
_BRAND = [
    "acme",
    "nova",
    "orion",
    "zenith",
    "apex",
    "lumen",
    "vertex",
    "polar",
    "delta",
    "aurora",
    "titan",
    "echo",
]
_NOUN = [
    "watch",
    "phone",
    "case",
    "sneakers",
    "dress",
    "jacket",
    "bag",
    "wallet",
    "headphones",
    "charger",
    "lamp",
    "sofa",
    "knife",
    "toy",
    "doll",
    "perfume",
    "cream",
    "supplement",
    "pills",
    "ring",
    "necklace",
    "camera",
    "drone",
    "bike",
    "helmet",
    "tent",
    "guitar",
    "book",
    "poster",
    "sticker",
    "mug",
    "lighter",
    "vape",
    "cigarettes",
    "pistol",
    "airsoft",
    "lingerie",
    "swimsuit",
    "costume",
    "wig",
    "mask",
    "gloves",
    "scarf",
    "laptop",
    "tablet",
    "keyboard",
    "mouse",
]
_MAT = [
    "leather",
    "cotton",
    "steel",
    "plastic",
    "wood",
    "glass",
    "silk",
    "wool",
    "ceramic",
    "titanium",
]
_EXTRA = (
    "free shipping",
    "best price",
    "hot sale",
    "100% authentic",
    "fast delivery",
    "for men",
    "for women",
    "for kids",
    "gift idea",
    "limited stock",
    "wholesale lot",
    "brand new in box",
    "no returns",
    "pay by wire transfer only",
    "18+ only",
)


def generate_texts(n: int, *, seed: int = 0) -> list[str]:
    """``n`` distinct-ish marketplace titles."""
    rng = np.random.default_rng(seed)

    def pick(words: list[str] | tuple[str, ...]) -> str:
        return str(words[int(rng.integers(len(words)))])

    texts = []
    for i in range(n):
        parts = [pick(_ADJ), pick(_COLOUR), pick(_BRAND), pick(_MAT), pick(_NOUN)]
        if rng.random() < 0.6:
            parts.append(pick(_EXTRA))
        if rng.random() < 0.4:
            parts.append(f"size {int(rng.integers(30, 50))}")
        parts.append(f"#{i % 997}")
        texts.append(" ".join(parts))
    return texts


def base_vectors(n_base: int, *, seed: int = 0) -> np.ndarray:
    """MiniLM encodings of ``n_base`` generated titles (cached)."""
    path = CACHE / f"minilm_base_{n_base}_{seed}.npy"
    if path.exists():
        return np.load(path)
    from ml.encoders import create_encoder

    encoder = create_encoder("minilm")
    texts = generate_texts(n_base, seed=seed)
    started = time.perf_counter()
    vectors = encoder.encode_texts(texts, batch_size=128)
    print(f"encoded {n_base} texts with MiniLM in {time.perf_counter() - started:.1f}s")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def _normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def realistic_vectors(n: int, *, n_base: int = 20_000, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors: the ``n_base`` encodings first, then synthesised ones (cached)."""
    path = CACHE / f"vectors_{n}_{n_base}_{seed}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    base = base_vectors(n_base, seed=seed)
    rng = np.random.default_rng(seed + 1)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    take = min(n, n_base)
    out[:take] = base[:take]
    dim = base.shape[1]
    for start in range(take, n, 100_000):
        stop = min(n, start + 100_000)
        a = rng.integers(n_base, size=stop - start)
        b = rng.integers(n_base, size=stop - start)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) / np.sqrt(dim)
        out[start:stop] = _normalize(base[a] + 0.3 * base[b] + 0.4 * noise)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def near_duplicate_queries(
    vectors: np.ndarray, n_queries: int, *, seed: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """``(queries, source rows)``: indexed vectors plus small noise (cosine ≈ 0.99)."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), size=n_queries, replace=False)
    dim = vectors.shape[1]
    noise = rng.standard_normal((n_queries, dim), dtype=np.float32) / np.sqrt(dim)
    return _normalize(np.asarray(vectors[rows]) + 0.15 * noise), rows
