"""Embedding throughput: the pipeline path vs the bare model forward, as a ratio.

    .venv/bin/python bench/ml_embed_throughput.py [--quick] [--batch-size 32]

For each path the *pipeline* is what callers run (``encoder.encode(items)``:
tokenise / load + preprocess images, batch, forward, fuse, L2-normalise, copy to numpy)
and the *bare* figure is only the model forward on the very same batches, tokenised or
preprocessed beforehand. ``ratio = pipeline items/s ÷ bare items/s`` (target ≥ 0.9).
Models: random-init OpenCLIP ViT-B-32 (weights don't change the cost) and the bundled
MiniLM. Each figure is the best (minimum time) of ``--repeats`` alternating runs: on a
shared machine the minimum is the run least disturbed by other processes.

``--tweets N`` measures instead what ``quorum embed`` does on real short texts: the first
``N`` Davidson tweets (read in place from ``../shared/data/davidson_hate_offensive``),
in chunks of ``--chunk`` items (``quorum embed``'s transaction size, 512), through
``ensure_embeddings`` into a throwaway SQLite database (the CLI's loop: read stored
vectors, encode the missing ones, store them) with the encoder sorting each chunk's
texts by length (the default) and without (``sort_by_length=False``, the old order),
against the bare MiniLM forward on the same batches of each order, tokenised beforehand;
the four measurements alternate within each of ``--repeats`` rounds, best of the rounds.
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
    parser.add_argument("--tweets", type=int, default=0,
                        help="measure quorum embed on this many Davidson tweets instead")
    parser.add_argument("--chunk", type=int, default=512)
    args = parser.parse_args()
    bs = args.batch_size
    if args.tweets:
        tweets_bench(args.tweets, bs=bs, chunk=args.chunk, repeats=args.repeats)
        return
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


def davidson_tweets(n: int) -> list[str]:
    import pandas as pd

    rel = Path("shared") / "data" / "davidson_hate_offensive" / "labeled_data.csv"
    for base in Path(__file__).resolve().parents:
        if (base / rel).exists():
            return pd.read_csv(base / rel, index_col=0)["tweet"].astype(str).tolist()[:n]
    raise SystemExit(f"../{rel} not found beside the repository")


def tweets_bench(n: int, *, bs: int, chunk: int, repeats: int) -> None:
    """``quorum embed``'s loop vs the bare forward on the same batches (see the docstring)."""
    from sqlalchemy import delete, select

    from backend.db import dispose_engines, session_scope, utcnow
    from backend.items.models import Item, ItemEmbedding
    from backend.migrate import upgrade
    from backend.ml_adapter.service import ensure_embeddings
    from ml.encoders_minilm import MiniLMEncoder, length_order

    texts = davidson_tweets(n)
    n = len(texts)
    chunks = [list(range(s, min(s + chunk, n))) for s in range(0, n, chunk)]
    sorted_enc = create_encoder("minilm")
    unsorted_enc = MiniLMEncoder(sort_by_length=False)
    unsorted_enc.model, unsorted_enc.tokenizer = sorted_enc.model, sorted_enc.tokenizer
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {bs}, "
          f"{n} Davidson tweets in chunks of {chunk}, best of {repeats}")

    def batches(order_of: Callable[[list[str]], object]) -> list[dict]:
        out = []
        for ids in chunks:
            part = [texts[i] for i in ids]
            order = list(order_of(part))  # type: ignore[call-overload]
            out += [sorted_enc.tokenize([part[j] for j in order[s:s + bs]])
                    for s in range(0, len(part), bs)]
        return out

    def token_order(part: list[str]) -> object:
        return length_order(sorted_enc.tokenizer(part, truncation=True,
                                                 max_length=sorted_enc.max_length)["input_ids"])

    sorted_batches = batches(token_order)
    plain_batches = batches(lambda part: range(len(part)))
    pad = {name: sum(int(b["input_ids"].numel()) for b in bb) / sum(
        int(b["attention_mask"].sum()) for b in bb)
        for name, bb in (("sorted", sorted_batches), ("unsorted", plain_batches))}

    def bare(bb: list[dict]) -> Callable[[], object]:
        def run() -> None:
            with torch.inference_mode():
                for batch in bb:
                    sorted_enc.model(**batch)
        return run

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'embed.sqlite3'}"
        os.environ.update({"QUORUM_DATABASE_URL": url, "QUORUM_DATA_DIR": tmp})
        from backend.settings import get_settings

        get_settings.cache_clear()
        upgrade(url)
        from backend.items.service import ingest
        from backend.policy import get_policy

        with session_scope() as session:
            ingest(session=session, rows=[{"source": "bench", "external_id": str(i),
                                           "title": t} for i, t in enumerate(texts)],
                   policy=get_policy(), now=utcnow())
        with session_scope() as session:
            ids = list(session.scalars(select(Item.id).order_by(Item.id)))

        def embed(encoder: object) -> Callable[[], object]:
            def run() -> None:  # the loop of `quorum embed`, from no stored vectors
                with session_scope() as session:
                    session.execute(delete(ItemEmbedding))
                for part in chunks:
                    with session_scope() as session:
                        rows = [r._asdict() for r in session.execute(
                            select(Item.id, Item.title, Item.description, Item.image)
                            .where(Item.id.in_([ids[i] for i in part])))]
                        ensure_embeddings(session=session, rows=rows, encoder=encoder,
                                          batch_size=bs)
            return run

        # all four measurements alternate within each round (the load of a shared
        # machine moves between rounds), best of the rounds for each
        runs = {"sorted pipeline": embed(sorted_enc), "sorted bare": bare(sorted_batches),
                "unsorted pipeline": embed(unsorted_enc), "unsorted bare": bare(plain_batches)}
        for fn in runs.values():  # warm-up
            fn()
        best = {name: timed(fn) for name, fn in runs.items()}
        for _ in range(repeats - 1):
            for name, fn in runs.items():
                best[name] = min(best[name], timed(fn))
        for key, title in (("sorted", "sorted by token length"),
                           ("unsorted", "unsorted (before)")):
            p, b = n / best[f"{key} pipeline"], n / best[f"{key} bare"]
            print(f"quorum embed, {title:<24} token slots per real token {pad[key]:.2f}: "
                  f"pipeline {p:7.1f}/s   bare forward {b:7.1f}/s   ratio {p / b:.3f}")
        speedup = best["unsorted pipeline"] / best["sorted pipeline"]
        print(f"sorted vs unsorted: pipeline x{speedup:.2f}, "
              f"bare x{best['unsorted bare'] / best['sorted bare']:.2f}")
        dispose_engines()


if __name__ == "__main__":
    main()
