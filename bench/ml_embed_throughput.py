"""Embedding throughput: the pipeline path vs the bare model forward, as a ratio.

    .venv/bin/python bench/ml_embed_throughput.py [--quick] [--batch-size 32]

For each path the *pipeline* is what callers run (``encoder.encode(items)``:
tokenise / load + preprocess images, batch, forward, fuse, L2-normalise, copy to numpy)
and the *bare* figure is only the model forward on the very same batches, tokenised or
preprocessed beforehand. ``ratio = pipeline items/s ÷ bare items/s`` (target ≥ 0.9).
Models: random-init OpenCLIP ViT-B-32 (weights don't change the cost) and the bundled
MiniLM. Each figure is the best (minimum time) of ``--repeats`` alternating runs: on a
shared machine the minimum is the run least disturbed by other processes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ml.encoders import create_encoder  # noqa: E402
from ml.inputs import ItemInput, item_text  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ml_common import generate_texts  # noqa: E402


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def compare(
    name: str, n: int, pipeline: Callable[[], object], bare: Callable[[], object], repeats: int
) -> None:
    pipeline()  # warm-up (allocator, kernels, tokenizer caches)
    bare()
    p_times, b_times = [], []
    for _ in range(repeats):
        p_times.append(timed(pipeline))
        b_times.append(timed(bare))
    p, b = n / min(p_times), n / min(b_times)
    print(f"{name:<34} pipeline {p:8.1f}/s   bare forward {b:8.1f}/s   ratio {p / b:.3f}")


def photos(n: int) -> list[Image.Image]:
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"]
    base = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in names]
    return [base[i % len(base)] for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    bs = args.batch_size
    n_text = 64 if args.quick else 256
    n_image = 32 if args.quick else 64
    texts = generate_texts(n_text, seed=3)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {bs}, "
        f"{n_text} texts, {n_image} images"
    )

    from ml.encoders_clip import write_random_clip_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_random_clip_checkpoint(Path(tmp) / "vit_b32_seed0.pt", seed=0)
        clip = create_encoder("open_clip", pretrained=str(checkpoint))
    text_items = [ItemInput(t) for t in texts]
    token_batches = [clip.tokenize(texts[i : i + bs]) for i in range(0, n_text, bs)]

    def clip_text_bare() -> None:
        with torch.inference_mode():
            for tokens in token_batches:
                clip.model.encode_text(tokens)

    compare(
        "open_clip ViT-B-32 text",
        n_text,
        lambda: clip.encode(text_items, batch_size=bs),
        clip_text_bare,
        args.repeats,
    )

    images = photos(n_image)
    pixel_batches = [clip.pixels(images[i : i + bs]) for i in range(0, n_image, bs)]

    def clip_image_bare() -> None:
        with torch.inference_mode():
            for pixels in pixel_batches:
                clip.model.encode_image(pixels)

    compare(
        "open_clip ViT-B-32 image",
        n_image,
        lambda: clip.encode_images(images, batch_size=bs),
        clip_image_bare,
        args.repeats,
    )

    fused_items = [ItemInput(texts[i], image=images[i]) for i in range(n_image)]
    fused_tokens = [
        clip.tokenize([item_text(it) for it in fused_items[i : i + bs]])
        for i in range(0, n_image, bs)
    ]

    def clip_fused_bare() -> None:
        with torch.inference_mode():
            for tokens, pixels in zip(fused_tokens, pixel_batches, strict=True):
                clip.model.encode_text(tokens)
                clip.model.encode_image(pixels)

    compare(
        "open_clip ViT-B-32 item (img+txt)",
        n_image,
        lambda: clip.encode(fused_items, batch_size=bs),
        clip_fused_bare,
        args.repeats,
    )

    minilm = create_encoder("minilm")
    minilm_batches = [minilm.tokenize(texts[i : i + bs]) for i in range(0, n_text, bs)]

    def minilm_bare() -> None:
        with torch.inference_mode():
            for batch in minilm_batches:
                minilm.model(**batch)

    compare(
        "minilm all-MiniLM-L6-v2 text",
        n_text,
        lambda: minilm.encode(text_items, batch_size=bs),
        minilm_bare,
        args.repeats,
    )


if __name__ == "__main__":
    main()
