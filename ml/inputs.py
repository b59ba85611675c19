"""What an encoder takes: :class:`ItemInput` and the helpers that turn it into text and pixels.

An item is a title, an optional description and an optional image. The image may be
a local path, a ``file://`` URL, an ``http(s)://`` URL (fetched only when the caller
allows it), raw encoded bytes or a ``PIL.Image``. An image that cannot be loaded is
never fatal: the loader logs a warning and the item is encoded from its text alone.
"""

from __future__ import annotations

import io
import logging
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from PIL import Image

__all__ = ["ImageLike", "ItemInput", "item_text", "load_image", "load_images"]

logger = logging.getLogger(__name__)

ImageLike: TypeAlias = str | bytes | Image.Image
"""A local path, a ``file://`` or ``http(s)://`` URL, encoded bytes or a PIL image."""


@dataclass(frozen=True, slots=True)
class ItemInput:
    """One item to embed: title, description and an optional image."""

    title: str
    description: str = ""
    image: ImageLike | None = None


def item_text(item: ItemInput) -> str:
    """The text an encoder embeds for an item: ``"title. description"`` (or the title)."""
    title = item.title.strip()
    description = item.description.strip()
    if not description:
        return title
    if not title:
        return description
    return f"{title}. {description}"


def _read_source(source: str, *, fetch_images: bool, timeout_s: float) -> bytes | Path:
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme in ("http", "https"):
        if not fetch_images:
            raise PermissionError("fetching http(s) images is off (fetch_images=False)")
        with urllib.request.urlopen(source, timeout=timeout_s) as response:  # noqa: S310
            return bytes(response.read())
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    return Path(source)


def load_image(
    image: ImageLike | None,
    *,
    fetch_images: bool = False,
    timeout_s: float = 10.0,
) -> Image.Image | None:
    """Load an image as RGB, or return ``None`` (with a logged warning) when it can't be.

    ``http(s)`` URLs are fetched only when ``fetch_images`` is true.
    """
    if image is None:
        return None
    try:
        if isinstance(image, Image.Image):
            pil = image
        elif isinstance(image, bytes | bytearray):
            pil = Image.open(io.BytesIO(image))
        else:
            source = _read_source(str(image), fetch_images=fetch_images, timeout_s=timeout_s)
            pil = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        pil.load()
        return pil.convert("RGB")
    except Exception as exc:  # any failure degrades to text-only, by contract
        shown = image if isinstance(image, str) else type(image).__name__
        logger.warning("could not load image %.200s (%s); treating it as absent", shown, exc)
        return None


def load_images(
    items: Sequence[ItemInput], *, fetch_images: bool = False
) -> list[Image.Image | None]:
    """:func:`load_image` for each item's image."""
    return [load_image(item.image, fetch_images=fetch_images) for item in items]
