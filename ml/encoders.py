"""Item encoders: the :class:`Encoder` protocol, the factory and the default choice.

Every encoder turns items (title, description, optional image) into float32 rows
with unit L2 norm, so that cosine similarity is a dot product and cosine distance is
``1 - dot`` everywhere downstream (classifier, vector index, reuse decision).

Encoders are identified by a stable ``encoder_id``; vectors from different encoders
never mix (the classifier artifact and the vector index both record it).

=================  ==================================================================
name               encoder
=================  ==================================================================
``"open_clip"``    :class:`ml.encoders_clip.OpenClipEncoder` (image + text, fused)
``"minilm"``       :class:`ml.encoders_minilm.MiniLMEncoder` (text only, bundled weights)
``"hashing"``      :class:`HashingEncoder` (character n-gram hashing; no model, for tests)
=================  ==================================================================
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ml.inputs import ItemInput, item_text

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Encoder",
    "HashingEncoder",
    "ItemInput",
    "create_encoder",
    "l2_normalize",
    "load_default_encoder",
    "pick_device",
]

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32


@runtime_checkable
class Encoder(Protocol):
    """Turns items and texts into L2-normalised float32 rows of width ``dim``."""

    encoder_id: str
    dim: int

    def encode(
        self,
        items: Sequence[ItemInput],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = False,
    ) -> np.ndarray:
        """``[len(items), dim]`` float32, unit rows."""
        ...

    def encode_texts(
        self, texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> np.ndarray:
        """``[len(texts), dim]`` float32, unit rows, from the text tower only."""
        ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def pick_device(device: str | None = None) -> tuple[str, Any]:
    """``(device, torch dtype)``: CUDA with fp16 when available, else CPU with fp32."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    return device, dtype


class HashingEncoder:
    """Character n-gram feature hashing, signed and L2-normalised. Text only, no model.

    Cheap and deterministic: useful for tests and as a last-resort offline encoder.
    Similar spellings give similar vectors; meaning is not captured.
    """

    def __init__(self, *, dim: int = 256, ngram_range: tuple[int, int] = (2, 4)) -> None:
        self.dim = dim
        self.ngram_range = ngram_range
        self.encoder_id = f"hashing:char{ngram_range[0]}-{ngram_range[1]}:{dim}"

    def encode_texts(
        self, texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> np.ndarray:
        from sklearn.feature_extraction.text import HashingVectorizer

        vectorizer = HashingVectorizer(
            n_features=self.dim,
            analyzer="char_wb",
            ngram_range=self.ngram_range,
            lowercase=True,
            norm="l2",
            alternate_sign=True,
        )
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(vectorizer.transform(list(texts)).toarray())

    def encode(
        self,
        items: Sequence[ItemInput],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = False,
    ) -> np.ndarray:
        return self.encode_texts([item_text(item) for item in items])


def _open_clip(**config: Any) -> Encoder:
    from ml.encoders_clip import OpenClipEncoder

    return OpenClipEncoder(**config)


def _minilm(**config: Any) -> Encoder:
    from ml.encoders_minilm import MiniLMEncoder

    return MiniLMEncoder(**config)


_FACTORIES: dict[str, Callable[..., Encoder]] = {
    "open_clip": _open_clip,
    "minilm": _minilm,
    "hashing": HashingEncoder,
}


def create_encoder(name: str, **config: Any) -> Encoder:
    """The one factory for encoders: ``create_encoder("open_clip", pretrained=...)``.

    ``name`` is one of ``"open_clip"``, ``"minilm"``, ``"hashing"``; ``config`` goes to
    the encoder's constructor unchanged.
    """
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(
            f"unknown encoder {name!r}; expected one of {sorted(_FACTORIES)}"
        ) from None
    return factory(**config)


def load_default_encoder(
    clip_pretrained: str | None, *, arch: str = "ViT-B-32", **config: Any
) -> Encoder:
    """CLIP when its weights are here (a checkpoint path, or a tag already cached), else MiniLM.

    Never downloads. When CLIP can't be used, logs one warning and returns the
    bundled MiniLM text encoder.
    """
    from ml.encoders_clip import resolve_clip_weights

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    weights = (
        resolve_clip_weights(arch=arch, pretrained=clip_pretrained) if clip_pretrained else None
    )
    if weights is not None:
        return create_encoder("open_clip", arch=arch, pretrained=clip_pretrained, **config)
    logger.warning("no CLIP weights configured/cached; falling back to MiniLM text encoder")
    return create_encoder("minilm", **config)
