"""``backend.contextvalues.bound``: the value is seen inside the block only, nested blocks
restore the outer value, an exception still resets it."""

import contextvars

import pytest

from backend.contextvalues import bound
from backend.media.images import _PREFETCHED, prefetched
from backend.ml_adapter.service import _PREPARED_VECTORS, prepared_vectors

VAR: contextvars.ContextVar[str | None] = contextvars.ContextVar("test_bound", default=None)


def test_bound_sets_and_resets_even_on_error():
    with bound(VAR, "outer"):
        assert VAR.get() == "outer"
        with bound(VAR, "inner"):
            assert VAR.get() == "inner"
        assert VAR.get() == "outer"
    assert VAR.get() is None
    with pytest.raises(RuntimeError), bound(VAR, "x"):
        raise RuntimeError("boom")
    assert VAR.get() is None


def test_prefetched_and_prepared_vectors_use_it():
    images, vectors = {(1, "u"): object()}, {(1, "enc"): (("t", "d", None), None)}
    with prefetched(images), prepared_vectors(vectors):
        assert _PREFETCHED.get() is images and _PREPARED_VECTORS.get() is vectors
    assert _PREFETCHED.get() is None and _PREPARED_VECTORS.get() is None
