"""Errors the ml library raises on purpose."""

from __future__ import annotations

__all__ = ["EncoderMismatchError", "MissingDependencyError"]


class EncoderMismatchError(ValueError):
    """Vectors of one encoder met an index, or a model, built for another."""


class MissingDependencyError(ImportError):
    """An optional dependency needed for this feature is not installed."""
