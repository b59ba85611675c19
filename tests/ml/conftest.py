"""Fixtures for the ml tests: a seeded random-init CLIP checkpoint and loaded encoders.

No CLIP weights exist offline, so the OpenCLIP tests load a ``ViT-B-32`` initialised
with ``torch.manual_seed(0)`` and saved to a temporary ``state_dict`` file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CLIP_SEED = 0


@pytest.fixture(scope="session")
def clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ml.encoders_clip import write_random_clip_checkpoint

    return write_random_clip_checkpoint(
        tmp_path_factory.mktemp("clip") / "vit_b32_seed0.pt", arch="ViT-B-32", seed=CLIP_SEED
    )


@pytest.fixture(scope="session")
def clip_encoder(clip_checkpoint: Path):
    from ml.encoders import create_encoder

    return create_encoder("open_clip", pretrained=str(clip_checkpoint), device="cpu")


@pytest.fixture(scope="session")
def minilm_encoder():
    from ml.encoders import create_encoder

    return create_encoder("minilm", device="cpu")


def photo(name: str) -> Image.Image:
    """A bundled scikit-image photo as an RGB PIL image."""
    from skimage import data

    array = getattr(data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(array).convert("RGB")


def jpeg_bytes(image: Image.Image, *, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
