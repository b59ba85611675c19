"""Quorum's ML library: encoders, safety score, classifier, bands, vector index, reuse.

Plain values, numpy arrays and DataFrames in and out; no web or ORM imports. Import the
submodules you need (``ml.encoders``, ``ml.classifier``, ``ml.bands``, ``ml.index``,
``ml.similarity``, ``ml.safety``, ``ml.calibration``); this package imports nothing
heavy on its own. See ``docs/ml.md``.

It sets one default before torch is loaded: ``OMP_WAIT_POLICY=PASSIVE`` (unless the
environment sets it), so torch's OpenMP threads sleep between parallel regions instead of
spinning. On a machine whose cores are shared (a worker beside the API server and the
database, or several workers), spinning threads fight over the cores: MiniLM on 2 busy
cores took 220 ms per item in batches of 5 with the default policy and 23 ms with
PASSIVE (``bench/omp_policy.py``, docs/benchmarks.md).
"""

import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
