"""Handing a value to code further down the call stack for the span of a ``with`` block.

``bound(var, value)`` sets a ``contextvars.ContextVar`` on entry and resets it on exit
(also on an exception), so a nested or concurrent block never sees another's value.
Used to pass work done before a transaction into it: prefetched images
(``media.images.prefetched``) and vectors encoded ahead (``ml_adapter.service.
prepared_vectors``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def bound(var: contextvars.ContextVar[T], value: T) -> Iterator[None]:
    """Within the block, ``var.get()`` is ``value``; afterwards what it was before."""
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)
