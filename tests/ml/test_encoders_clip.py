"""OpenCLIP encoder on a seeded random-init ViT-B-32 (no pretrained weights offline)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from ml.encoders import Encoder, create_encoder, l2_normalize
from ml.inputs import ItemInput
from tests.ml.conftest import jpeg_bytes, photo

REFERENCE = Path(__file__).parent / "fixtures" / "clip_vit_b32_seed0_reference.json"
REFERENCE_ITEMS = [
    ItemInput("Red leather handbag", "genuine leather, barely used"),
    ItemInput("Replica watch", "best price, wire transfer only"),
    ItemInput("Astronaut poster", "A2 print", image=jpeg_bytes(photo("astronaut"), quality=90)),
]


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[ItemInput]:
    folder = tmp_path_factory.mktemp("img")
    photo("coffee").save(folder / "coffee.png")
    texts = [
        "red shoes",
        "blue hat",
        "vintage camera",
        "kitchen table",
        "gaming laptop",
        "silk scarf",
        "leather wallet",
        "desk lamp",
    ]
    out = [ItemInput(t, f"description of {t}") for t in texts]
    out[2] = ItemInput("vintage camera", "works", image=str(folder / "coffee.png"))
    out[5] = ItemInput("silk scarf", image=photo("chelsea"))
    return out


def test_is_an_encoder_with_stable_id(clip_encoder, clip_checkpoint: Path) -> None:
    assert isinstance(clip_encoder, Encoder)
    assert clip_encoder.dim == 512
    assert clip_encoder.encoder_id.startswith("open_clip:ViT-B-32:sha256-")
    digest = hashlib.sha256(clip_checkpoint.read_bytes()).hexdigest()[:16]
    assert clip_encoder.encoder_id == f"open_clip:ViT-B-32:sha256-{digest}"


def test_shapes_and_unit_norm(clip_encoder, items: list[ItemInput]) -> None:
    vectors = clip_encoder.encode(items)
    assert vectors.shape == (8, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    texts = clip_encoder.encode_texts(["a", "b"])
    assert texts.shape == (2, 512)
    assert clip_encoder.encode([]).shape == (0, 512)


def test_batch_size_does_not_change_vectors(clip_encoder, items: list[ItemInput]) -> None:
    one = clip_encoder.encode(items, batch_size=1)
    eight = clip_encoder.encode(items, batch_size=8)
    np.testing.assert_allclose(one, eight, atol=1e-5)


def test_deterministic(clip_encoder, items: list[ItemInput]) -> None:
    np.testing.assert_array_equal(clip_encoder.encode(items[:4]), clip_encoder.encode(items[:4]))


def test_fusion_is_weighted_sum_of_unit_towers(clip_encoder) -> None:
    image = photo("chelsea")
    item = ItemInput("silk scarf", "soft", image=image)
    text_vec = clip_encoder.encode_texts(["silk scarf. soft"])
    image_vec = clip_encoder.encode_images([image])
    fused = clip_encoder.encode([item])
    w = clip_encoder.image_weight
    np.testing.assert_allclose(fused, l2_normalize(w * image_vec + (1 - w) * text_vec), atol=1e-5)
    assert (fused @ text_vec.T).item() < 0.9999 and (fused @ image_vec.T).item() < 0.9999
    # no image: the text vector alone
    np.testing.assert_allclose(
        clip_encoder.encode([ItemInput("silk scarf", "soft")]), text_vec, atol=1e-6
    )


def test_unloadable_image_falls_back_to_text(clip_encoder, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ml.inputs"):
        broken = clip_encoder.encode([ItemInput("desk lamp", image="/no/such/file.jpg")])
    np.testing.assert_allclose(broken, clip_encoder.encode_texts(["desk lamp"]), atol=1e-6)
    assert "could not load image" in caplog.text


def test_image_weight_zero_is_text_only(clip_checkpoint: Path) -> None:
    encoder = create_encoder("open_clip", pretrained=str(clip_checkpoint), image_weight=0.0)
    item = ItemInput("silk scarf", image=photo("chelsea"))
    np.testing.assert_allclose(
        encoder.encode([item]), encoder.encode_texts(["silk scarf"]), atol=1e-6
    )
    with pytest.raises(ValueError, match="image_weight"):
        create_encoder("open_clip", pretrained=str(clip_checkpoint), image_weight=1.5)


def test_missing_weights_are_not_downloaded(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        create_encoder("open_clip", pretrained=str(tmp_path / "missing.pt"))


def _reference_values(encoder) -> dict[str, list[list[float]]]:
    vectors = encoder.encode(REFERENCE_ITEMS)
    return {
        "encoder_id": encoder.encoder_id,
        "first_8_dims": np.round(vectors[:, :8], 6).tolist(),
        "pairwise_cosine": np.round(vectors @ vectors.T, 6).tolist(),
    }


def test_matches_stored_reference(clip_encoder) -> None:
    """Regression: the seeded model's outputs, stored once (QUORUM_REGEN_REFERENCE=1)."""
    current = _reference_values(clip_encoder)
    if os.environ.get("QUORUM_REGEN_REFERENCE") == "1":
        REFERENCE.parent.mkdir(exist_ok=True)
        REFERENCE.write_text(json.dumps(current, indent=1) + "\n")
    stored = json.loads(REFERENCE.read_text())
    assert current["encoder_id"] == stored["encoder_id"]
    np.testing.assert_allclose(current["first_8_dims"], stored["first_8_dims"], atol=2e-4)
    np.testing.assert_allclose(current["pairwise_cosine"], stored["pairwise_cosine"], atol=2e-4)
