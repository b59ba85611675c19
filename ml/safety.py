"""Image safety score from NudeNet's bundled detector (``320n.onnx``, ships in its wheel).

``score = max confidence over the exposed-nudity classes`` detected in the image, in
[0, 1]; 0 when nothing is detected (NudeNet reports boxes from confidence 0.2 up).
Covered body parts, faces and feet do not count. The score is a signal for the
classifier and for rules (``safety >= 0.6`` → adult queue), not a decision by itself.

``nudenet`` is optional (``pip install quorum[safety]``): importing this module never
fails; using :class:`SafetyScorer` without it raises :class:`MissingDependencyError`.
An image that cannot be loaded scores NaN (unknown), never 0.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ml.errors import MissingDependencyError
from ml.inputs import ImageLike, load_image

__all__ = ["EXPOSED_CLASSES", "SafetyScorer"]

logger = logging.getLogger(__name__)

EXPOSED_CLASSES = frozenset(
    {
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)


class SafetyScorer:
    """Scores images for exposed nudity with NudeNet; ``score(images) -> [n] float``.

    ``classes`` are the NudeNet classes that count; ``fetch_images`` allows http(s) URLs.
    """

    model_id = "nudenet:320n"

    def __init__(
        self,
        *,
        classes: frozenset[str] = EXPOSED_CLASSES,
        batch_size: int = 8,
        fetch_images: bool = False,
    ) -> None:
        try:
            from nudenet import NudeDetector
        except ImportError as exc:
            raise MissingDependencyError(
                "image safety scoring needs nudenet: pip install 'quorum[safety]' "
                "(or pip install 'nudenet>=3.4,<4')"
            ) from exc
        self.classes = classes
        self.batch_size = batch_size
        self.fetch_images = fetch_images
        self.detector: Any = NudeDetector()

    def detect(self, images: Sequence[ImageLike]) -> list[list[dict[str, Any]] | None]:
        """NudeNet's raw detections per image (``None`` for an image that didn't load)."""
        arrays: list[np.ndarray | None] = []
        for image in images:
            pil = load_image(image, fetch_images=self.fetch_images)
            # NudeNet reads OpenCV's BGR channel order
            arrays.append(
                None if pil is None else np.ascontiguousarray(np.asarray(pil)[:, :, ::-1])
            )
        loaded = [a for a in arrays if a is not None]
        found = iter(
            self.detector.detect_batch(loaded, batch_size=self.batch_size) if loaded else []
        )
        return [None if a is None else next(found) for a in arrays]

    def score(self, images: Sequence[ImageLike]) -> np.ndarray:
        """``[len(images)]`` float32 in [0, 1]; NaN where the image could not be loaded."""
        out = np.full(len(images), np.nan, dtype=np.float32)
        for i, detections in enumerate(self.detect(images)):
            if detections is None:
                continue
            scores = [d["score"] for d in detections if d["class"] in self.classes]
            out[i] = max(scores, default=0.0)
        return out
