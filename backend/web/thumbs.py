"""Resized thumbnails for tiles and neighbour cards (the full photo is 150–400 KB; a
thumbnail is a few KB). Made with Pillow on first request and kept under the data folder
(``thumbs/``), keyed by item, width and the source file's size and mtime, so a changed
photo gets a new thumbnail."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

from backend.errors import NotFound

WIDTHS = (96, 160, 320)
DEFAULT_WIDTH = 160
MAX_PIXELS = 40_000_000  # refuse decompression bombs


def make_thumbnail(data: bytes | Path, width: int) -> bytes:
    """A JPEG at most ``width`` px wide and high (aspect kept), EXIF orientation applied."""
    if width not in WIDTHS:
        raise NotFound(f"thumbnails come in widths {', '.join(map(str, WIDTHS))}")
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with Image.open(src) as img:
            if img.width * img.height > MAX_PIXELS:
                raise NotFound("this image is too large to make a thumbnail of")
            img = ImageOps.exif_transpose(img)
            img.thumbnail((width, width))
            if img.mode not in ("RGB", "L"):
                img = img.convert("RGB")
            out = io.BytesIO()
            img.save(out, format="JPEG", quality=82, optimize=True)
            return out.getvalue()
    except (OSError, Image.DecompressionBombError, ValueError):
        raise NotFound("this item's image cannot be read") from None


def cached_thumbnail(*, path: Path, item_id: int, width: int, cache_dir: Path) -> Path:
    """The thumbnail file of the local image ``path`` (made once, then reused)."""
    st = path.stat()
    target = cache_dir / f"{item_id}-{width}-{st.st_size}-{int(st.st_mtime)}.jpg"
    if not target.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        data = make_thumbnail(path, width)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)  # atomic: a concurrent request never sees half a file
    return target
