from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from ml.errors import MissingDependencyError
from tests.ml.conftest import photo

nudenet = pytest.importorskip("nudenet")


@pytest.fixture(scope="module")
def scorer():
    from ml.safety import SafetyScorer

    return SafetyScorer()


def test_safe_photos_score_low(scorer, tmp_path: Path) -> None:
    path = tmp_path / "coffee.png"
    photo("coffee").save(path)
    images = [photo("astronaut"), str(path), photo("chelsea"), photo("camera"), path.read_bytes()]
    scores = scorer.score(images)
    assert scores.shape == (5,) and scores.dtype == np.float32
    assert (scores >= 0).all() and (scores < 0.2).all()


def test_detector_runs_on_real_content(scorer) -> None:
    """The model is live: it finds the astronaut's face (a class that does not count)."""
    (detections,) = scorer.detect([photo("astronaut")])
    assert any(d["class"] == "FACE_FEMALE" and d["score"] > 0.5 for d in detections)


def test_score_is_max_over_exposed_classes_and_nan_when_unloadable(scorer, monkeypatch) -> None:
    fake = [
        [
            {"class": "FACE_FEMALE", "score": 0.99},
            {"class": "BUTTOCKS_EXPOSED", "score": 0.41},
            {"class": "FEMALE_BREAST_EXPOSED", "score": 0.83},
        ],
        [{"class": "FEMALE_BREAST_COVERED", "score": 0.95}],
    ]
    monkeypatch.setattr(scorer.detector, "detect_batch", lambda arrays, batch_size: fake)
    scores = scorer.score([photo("coffee"), photo("chelsea"), "/no/such/image.png"])
    np.testing.assert_allclose(scores[:2], [0.83, 0.0], atol=1e-6)
    assert np.isnan(scores[2])


def test_module_imports_without_nudenet_and_errors_clearly(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "nudenet", None)
    import ml.safety

    module = importlib.reload(ml.safety)
    with pytest.raises(MissingDependencyError, match="quorum\\[safety\\]"):
        module.SafetyScorer()
