from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from ml.encoders import Encoder, HashingEncoder, create_encoder, load_default_encoder
from ml.encoders_minilm import MiniLMEncoder
from ml.inputs import ItemInput


def test_minilm_is_a_384_d_encoder(minilm_encoder) -> None:
    assert isinstance(minilm_encoder, Encoder)
    assert (minilm_encoder.encoder_id, minilm_encoder.dim) == ("minilm:all-MiniLM-L6-v2", 384)
    vectors = minilm_encoder.encode([ItemInput("red shoes", "size 42"), ItemInput("hat")])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_texts(minilm_encoder) -> None:
    v = minilm_encoder.encode_texts(
        [
            "A cat is sitting on the mat.",
            "A kitten sits on a rug.",
            "The stock market fell sharply today.",
            "Brand new iPhone 15, sealed box",
            "Unopened Apple iPhone 15 in original packaging",
            "Handmade wooden garden bench",
        ]
    )
    sims = v @ v.T
    assert sims[0, 1] > 0.5 and sims[0, 1] > sims[0, 2] + 0.3
    assert sims[3, 4] > sims[3, 5] + 0.3 and sims[3, 4] > sims[4, 5] + 0.3


def test_matches_the_sentence_transformers_pipeline_on_a_known_pair(minilm_encoder) -> None:
    # all-MiniLM-L6-v2 reference cosine for this pair, from sentence-transformers 6.2
    v = minilm_encoder.encode_texts(["a cat sits on the mat", "a kitten is sitting on a rug"])
    assert float(v[0] @ v[1]) == pytest.approx(0.6945, abs=1e-3)


def test_batching_and_items_are_consistent(minilm_encoder) -> None:
    texts = ["short", "a much longer text that pads the batch with many more tokens", "mid one"]
    one = minilm_encoder.encode_texts(texts, batch_size=1)
    three = minilm_encoder.encode_texts(texts, batch_size=3)
    np.testing.assert_allclose(one, three, atol=1e-5)
    items = minilm_encoder.encode([ItemInput("short")], progress=True)
    np.testing.assert_allclose(items, one[:1], atol=1e-6)


def test_factory_names_and_errors() -> None:
    hashing = create_encoder("hashing", dim=64)
    assert isinstance(hashing, HashingEncoder) and hashing.encode([ItemInput("x")]).shape == (1, 64)
    with pytest.raises(ValueError, match="unknown encoder"):
        create_encoder("word2vec")


def test_default_encoder_falls_back_to_minilm_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for pretrained in (None, str(tmp_path / "missing.pt"), "laion2b_s34b_b79k"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            encoder = load_default_encoder(pretrained)
        assert isinstance(encoder, MiniLMEncoder)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [r.getMessage() for r in warnings] == [
            "no CLIP weights configured/cached; falling back to MiniLM text encoder"
        ]


def test_default_encoder_uses_clip_when_checkpoint_exists(clip_checkpoint: Path) -> None:
    from ml.encoders_clip import OpenClipEncoder

    encoder = load_default_encoder(str(clip_checkpoint))
    assert isinstance(encoder, OpenClipEncoder) and encoder.dim == 512


def test_texts_are_batched_by_length_and_rows_come_back_in_order(minilm_encoder,
                                                                 monkeypatch) -> None:
    texts = ["a much longer text that pads the batch with many more tokens than the rest",
             "hi", "a medium sized one here", "ok", "another rather long sentence about shoes",
             "yes &#128514;&#128514; http://t.co/abc"]  # short in characters, long in tokens
    seen: list[list[int]] = []
    forward = minilm_encoder.forward
    monkeypatch.setattr(minilm_encoder, "forward", lambda batch: seen.append(
        batch["attention_mask"].sum(dim=1).tolist()) or forward(batch))
    sorted_rows = minilm_encoder.encode_texts(texts, batch_size=2)
    # batches hold texts of similar token counts: padding is most of the cost on short
    # texts, so no short text shares a batch with a long one
    assert len(seen) == 3
    assert [max(b) for b in seen[:-1]] <= [min(b) for b in seen[1:]]
    assert sorted(n for b in seen for n in b) == [n for b in seen for n in b]
    one_by_one = np.vstack([minilm_encoder.encode_texts([t]) for t in texts])
    np.testing.assert_allclose(sorted_rows, one_by_one, atol=1e-5)
    minilm_encoder.sort_by_length = False
    try:
        np.testing.assert_allclose(minilm_encoder.encode_texts(texts, batch_size=2),
                                   one_by_one, atol=1e-5)
    finally:
        minilm_encoder.sort_by_length = True
