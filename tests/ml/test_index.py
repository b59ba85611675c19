from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ml.errors import EncoderMismatchError
from ml.index import ExactIndex, VectorIndex, create_index, load_index
from ml.index_hnsw import HnswIndex

DIM = 32


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(params=["exact", "hnsw"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make(kind: str, **config) -> VectorIndex:
    index = create_index(kind, dim=DIM, encoder_id="hashing:test", **config)
    assert isinstance(index, VectorIndex)
    return index


def test_search_returns_cosine_distance_nearest_first(kind: str) -> None:
    rng = np.random.default_rng(0)
    x = unit(rng, 200)
    index = make(kind)
    index.add(np.arange(1000, 1200), x)
    ids, dist = index.search(x[:5], 4)
    assert ids.dtype == np.int64 and dist.dtype == np.float32 and ids.shape == (5, 4)
    assert ids[:, 0].tolist() == list(range(1000, 1005))
    np.testing.assert_allclose(dist[:, 0], 0.0, atol=1e-5)
    expected = 1.0 - np.einsum("ij,ikj->ik", x[:5], x[ids - 1000])
    np.testing.assert_allclose(dist, expected, atol=1e-5)
    assert np.all(np.diff(dist, axis=1) >= -1e-6)


def test_padding_when_fewer_than_k(kind: str) -> None:
    index = make(kind)
    empty_ids, empty_dist = index.search(unit(np.random.default_rng(1), 2), 3)
    assert (empty_ids == -1).all() and np.isinf(empty_dist).all()
    index.add(np.array([7, 8]), unit(np.random.default_rng(2), 2))
    ids, dist = index.search(unit(np.random.default_rng(3), 1), 5)
    assert sorted(ids[0, :2].tolist()) == [7, 8]
    assert ids[0, 2:].tolist() == [-1, -1, -1] and np.isinf(dist[0, 2:]).all()


def test_re_adding_an_id_replaces_its_vector(kind: str) -> None:
    rng = np.random.default_rng(4)
    x = unit(rng, 50)
    index = make(kind)
    index.add(np.arange(50), x)
    new = unit(rng, 1)
    index.add(np.array([3]), new)
    assert len(index) == 50
    ids, dist = index.search(new, 1)
    assert ids[0, 0] == 3 and dist[0, 0] == pytest.approx(0.0, abs=1e-5)
    ids, _ = index.search(x[3:4], 1)
    assert ids[0, 0] != 3 or np.dot(x[3], new[0]) > 0.99


def test_remove_hides_ids_and_re_add_revives(kind: str) -> None:
    rng = np.random.default_rng(5)
    x = unit(rng, 100)
    index = make(kind)
    index.add(np.arange(100), x)
    assert index.remove(np.array([0, 1, 999])) == 2
    assert len(index) == 98 and 0 not in index and 2 in index
    ids, _ = index.search(x[:2], 10)
    assert not np.isin(ids, [0, 1]).any()
    index.add(np.array([0]), x[0:1])
    assert index.search(x[0:1], 1)[0][0, 0] == 0 and len(index) == 99


def test_save_load_and_grow_without_rebuild(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    x = unit(rng, 3000)
    index = make(kind)
    index.add(np.arange(2000), x[:2000])
    index.remove(np.array([5]))
    index.save(tmp_path / "idx")
    loaded = load_index(tmp_path / "idx", encoder_id="hashing:test")
    assert type(loaded) is type(index) and len(loaded) == 1999 and 5 not in loaded
    before = index.search(x[:20], 3)
    after = loaded.search(x[:20], 3)
    np.testing.assert_array_equal(before[0], after[0])
    loaded.add(np.arange(2000, 3000), x[2000:])  # grows past the loaded capacity
    assert len(loaded) == 2999
    ids, _ = loaded.search(x[2990:], 1)
    assert ids[:, 0].tolist() == list(range(2990, 3000))


def test_loading_with_another_encoder_is_refused(kind: str, tmp_path: Path) -> None:
    index = make(kind)
    index.add(np.array([1]), unit(np.random.default_rng(7), 1))
    index.save(tmp_path / "idx")
    with pytest.raises(EncoderMismatchError, match="hashing:test"):
        load_index(tmp_path / "idx", encoder_id="minilm:all-MiniLM-L6-v2")


def test_bad_input_is_rejected(kind: str) -> None:
    index = make(kind)
    with pytest.raises(ValueError, match=r"\[n, 32\]"):
        index.add(np.array([1]), np.ones((1, 8)))
    with pytest.raises(ValueError, match=">= 0"):
        index.add(np.array([-1]), np.ones((1, DIM)))
    with pytest.raises(ValueError, match="duplicate"):
        index.add(np.array([1, 1]), np.ones((2, DIM)))


def test_concurrent_searches_match_serial_while_writer_adds(kind: str) -> None:
    rng = np.random.default_rng(8)
    x = unit(rng, 4000)
    index = make(kind)
    index.add(np.arange(3000), x[:3000])
    queries = x[:300]
    serial = index.search(queries, 1)[0][:, 0]
    stop = threading.Event()

    def writer() -> None:  # adds ids far from the queries' own vectors
        for start in range(3000, 4000, 100):
            index.add(np.arange(start, start + 100), x[start : start + 100])
        stop.set()

    def reader(i: int) -> int:
        return int(index.search(queries[i : i + 1], 1)[0][0, 0])

    thread = threading.Thread(target=writer)
    thread.start()
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(reader, range(len(queries))))
    thread.join()
    assert stop.is_set() and len(index) == 4000
    assert parallel == serial.tolist()


def test_hnsw_recall_against_exact_on_clustered_vectors() -> None:
    rng = np.random.default_rng(9)
    centres = unit(rng, 200, 64)
    x = centres[rng.integers(200, size=20_000)] + 0.3 * unit(rng, 20_000, 64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = x[:500] + 0.05 * unit(rng, 500, 64)
    exact, approx = ExactIndex(dim=64), HnswIndex(dim=64)
    for index in (exact, approx):
        index.add(np.arange(len(x)), x)
    truth, truth_dist = exact.search(queries, 10)
    found, found_dist = approx.search(queries, 10)
    assert np.mean(found[:, 0] == truth[:, 0]) >= 0.95
    np.testing.assert_allclose(found_dist[:, 0], truth_dist[:, 0], atol=1e-4)


def test_exact_index_chunking_gives_the_same_answer() -> None:
    rng = np.random.default_rng(10)
    x = unit(rng, 1000)
    whole, chunked = ExactIndex(dim=DIM), ExactIndex(dim=DIM, chunk_size=37)
    for index in (whole, chunked):
        index.add(np.arange(1000), x)
    for a, b in zip(whole.search(x[:50], 7), chunked.search(x[:50], 7), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown index kind"):
        create_index("faiss", dim=4)
