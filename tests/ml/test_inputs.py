from __future__ import annotations

import logging
import threading
from functools import partial
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path

import pytest
from PIL import Image

from ml.inputs import ItemInput, item_text, load_image
from tests.ml.conftest import jpeg_bytes, photo


def test_item_text_joins_title_and_description() -> None:
    assert item_text(ItemInput("Red shoes", " size 42 ")) == "Red shoes. size 42"
    assert item_text(ItemInput("Red shoes")) == "Red shoes"
    assert item_text(ItemInput("", "only a description")) == "only a description"


def test_item_input_is_frozen() -> None:
    item = ItemInput("a")
    with pytest.raises(AttributeError):
        item.title = "b"  # type: ignore[misc]


@pytest.fixture()
def coffee_file(tmp_path: Path) -> Path:
    path = tmp_path / "coffee.jpg"
    path.write_bytes(jpeg_bytes(photo("coffee")))
    return path


def test_load_image_from_path_url_bytes_and_pil(coffee_file: Path) -> None:
    for source in (
        str(coffee_file),
        coffee_file.as_uri(),
        coffee_file.read_bytes(),
        Image.open(coffee_file),
    ):
        image = load_image(source)
        assert image is not None and image.mode == "RGB" and image.size == (600, 400)


def test_load_image_failures_warn_and_return_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with caplog.at_level(logging.WARNING, logger="ml.inputs"):
        assert load_image(str(tmp_path / "missing.jpg")) is None
        assert load_image(str(tmp_path / "broken.jpg")) is None
        assert load_image(b"\x00\x01") is None
    assert len([r for r in caplog.records if "could not load image" in r.message]) == 3


@pytest.fixture()
def http_root(coffee_file: Path):
    handler = partial(SimpleHTTPRequestHandler, directory=str(coffee_file.parent))
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_http_images_are_fetched_only_when_allowed(
    http_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{http_root}/coffee.jpg"
    with caplog.at_level(logging.WARNING, logger="ml.inputs"):
        assert load_image(url) is None
    assert "fetch_images=False" in caplog.text
    fetched = load_image(url, fetch_images=True)
    assert fetched is not None and fetched.size == (600, 400)
