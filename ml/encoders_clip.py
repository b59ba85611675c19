"""OpenCLIP encoder: image and text towers, fused into one item vector.

Fusion: both towers' outputs are L2-normalised, then the item vector is
``normalize(w * image + (1 - w) * text)`` with ``w = image_weight`` (0.5 by default);
an item without a loadable image gets its text vector alone. With ``w = 0.5`` the
cosine between two fused vectors rewards agreement in either modality, and an
image-only duplicate (same photo, reworded title) still lands close.

Weights are never downloaded: ``pretrained`` is a checkpoint path, or an OpenCLIP tag
whose file is already in the Hugging Face cache (see :func:`resolve_clip_weights`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml.encoders import DEFAULT_BATCH_SIZE, l2_normalize, pick_device
from ml.inputs import ItemInput, item_text, load_images

__all__ = ["OpenClipEncoder", "resolve_clip_weights", "write_random_clip_checkpoint"]

_HF_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _sha256_prefix(path: Path, *, length: int = 16) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def resolve_clip_weights(*, arch: str, pretrained: str) -> str | None:
    """Local file holding the weights for ``pretrained`` (a path or a tag), or ``None``.

    Looks only at the disk: an existing path, or a tag's file in the Hugging Face
    cache (``HF_HOME``) or the OpenAI URL cache (``~/.cache/clip``). Never downloads.
    """
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path)
    from open_clip import pretrained as oc_pretrained

    cfg = oc_pretrained.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        return None
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hub)  # "org/repo/" or "org/repo/file.bin"
        for name in ((filename,) if filename else ()) + _HF_FILENAMES:
            found = try_to_load_from_cache(repo_id=repo_id, filename=name)
            if isinstance(found, str) and Path(found).is_file():
                return found
    url = cfg.get("url", "")
    if url:
        cached = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if cached.is_file():
            return str(cached)
    return None


def write_random_clip_checkpoint(
    path: str | os.PathLike[str], *, arch: str = "ViT-B-32", seed: int = 0
) -> Path:
    """Save a seeded random-init OpenCLIP ``state_dict`` (tests and benchmarks use it)."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=None)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), target)
    return target


class OpenClipEncoder:
    """Items → fused CLIP vectors (``dim`` = the model's embedding width, 512 for ViT-B-32).

    Parameters
    ----------
    arch: OpenCLIP architecture name.
    pretrained: checkpoint path, or a tag already cached locally.
    image_weight: ``w`` in ``normalize(w * image + (1 - w) * text)``.
    device: ``"cuda"``/``"cpu"``; ``None`` picks CUDA (fp16) when available, else CPU (fp32).
    fetch_images: allow fetching ``http(s)`` image URLs (off by default).
    """

    def __init__(
        self,
        *,
        arch: str = "ViT-B-32",
        pretrained: str,
        image_weight: float = 0.5,
        device: str | None = None,
        fetch_images: bool = False,
    ) -> None:
        import open_clip

        if not 0.0 <= image_weight <= 1.0:
            raise ValueError(f"image_weight must be in [0, 1], got {image_weight}")
        weights = resolve_clip_weights(arch=arch, pretrained=pretrained)
        if weights is None:
            raise FileNotFoundError(
                f"no local weights for open_clip {arch} {pretrained!r}: pass a checkpoint path "
                "or a tag already in the Hugging Face cache (nothing is downloaded)"
            )
        self.arch = arch
        self.pretrained = pretrained
        self.image_weight = image_weight
        self.fetch_images = fetch_images
        self.device, self.dtype = pick_device(device)
        tag = (
            f"sha256-{_sha256_prefix(Path(weights))}"
            if Path(pretrained).expanduser().is_file()
            else pretrained
        )
        self.encoder_id = f"open_clip:{arch}:{tag}"
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch,
            pretrained=weights,
            device=self.device,
            precision="fp16" if self.device.startswith("cuda") else "fp32",
        )
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.dim = int(open_clip.get_model_config(arch)["embed_dim"])

    # -- the steps, public so benchmarks can time the bare model on the same tensors --
    def tokenize(self, texts: Sequence[str]) -> Any:
        """Token ids ``[n, context_length]`` on the encoder's device."""
        return self.tokenizer(list(texts)).to(self.device)

    def pixels(self, images: Sequence[Any]) -> Any:
        """Preprocessed image batch ``[n, 3, H, W]`` on the device, in the model's dtype."""
        import torch

        batch = torch.stack([self.preprocess(image) for image in images])
        return batch.to(self.device, dtype=self.dtype)

    def _forward(self, tower: str, batch: Any) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = (
                self.model.encode_text(batch) if tower == "text" else self.model.encode_image(batch)
            )
        return l2_normalize(out.float().cpu().numpy())

    # -- the Encoder protocol --
    def encode_texts(
        self, texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            out[start : start + len(chunk)] = self._forward("text", self.tokenize(chunk))
        return out

    def encode_images(
        self, images: Sequence[Any], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> np.ndarray:
        """Image-tower vectors for loaded PIL images, ``[len(images), dim]``."""
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            out[start : start + len(chunk)] = self._forward("image", self.pixels(chunk))
        return out

    def encode(
        self,
        items: Sequence[ItemInput],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = False,
    ) -> np.ndarray:
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        starts = range(0, len(items), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"encode {self.arch}", unit="batch")
        for start in starts:
            chunk = items[start : start + batch_size]
            vectors = self.encode_texts([item_text(item) for item in chunk], batch_size=batch_size)
            images = load_images(chunk, fetch_images=self.fetch_images)
            with_image = [i for i, image in enumerate(images) if image is not None]
            if with_image and self.image_weight > 0:
                image_vectors = self.encode_images(
                    [images[i] for i in with_image], batch_size=batch_size
                )
                w = self.image_weight
                vectors[with_image] = l2_normalize(
                    w * image_vectors + (1.0 - w) * vectors[with_image]
                )
            out[start : start + len(chunk)] = vectors
        return out
