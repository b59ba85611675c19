"""Quorum's ML library: encoders, safety score, classifier, bands, vector index, reuse.

Plain values, numpy arrays and DataFrames in and out; no web or ORM imports. Import the
submodules you need (``ml.encoders``, ``ml.classifier``, ``ml.bands``, ``ml.index``,
``ml.similarity``, ``ml.safety``, ``ml.calibration``); this package imports nothing
heavy on its own. See ``docs/ml.md``.
"""
