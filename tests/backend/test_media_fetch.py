"""The embed stage fetches http(s) item images under guards (``backend/media/images.py``).

A loopback server serves a real photo (scikit-image's bundled astronaut), one over the
size limit, one too slow and one that is not an image; a private and a link-local
address are refused before any connection. The good image reaches the encoder as bytes
and gets a PDQ hash; every bad one is recorded on the item with the sentence why; every
item is embedded and routed on its text.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from sqlalchemy import select

from backend.decisions.models import ItemStatus
from backend.items.models import ItemEmbedding
from backend.media.models import ItemImage
from tests.backend.conftest import route_rows
from tests.conftest import auth, item_row

MAX_BYTES = 60_000
TIMEOUT_S = 2.0  # generous: the test machine is shared and loaded


def _jpeg(name: str, *, width: int | None = None, quality: int = 85) -> bytes:
    from PIL import Image
    from skimage import data

    array = getattr(data, name)()
    image = Image.fromarray(array).convert("RGB")
    if width:
        image = image.resize((width, width * image.height // image.width))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class _Server(BaseHTTPRequestHandler):
    routes: dict[str, tuple[str, bytes, float]] = {}
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(self.path)
        if self.path not in self.routes:
            self.send_response(404)
            self.end_headers()
            return
        ctype, body, delay = self.routes[self.path]
        time.sleep(delay)
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def photo_server():  # noqa: ANN201
    good = _jpeg("astronaut", width=160)
    big = _jpeg("coffee", quality=95)
    assert len(good) < MAX_BYTES < len(big)
    _Server.seen = []
    _Server.routes = {
        "/astronaut.jpg": ("image/jpeg", good, 0.0),
        "/coffee-big.jpg": ("image/jpeg", big, 0.0),
        "/slow.jpg": ("image/jpeg", good, 3 * TIMEOUT_S),
        "/listing.html": ("text/html", b"<html><body>not a photo</body></html>", 0.0),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", good
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fetch_on(ml_on, monkeypatch):  # noqa: ANN001, ANN201
    """The embed worker may fetch from loopback (listed explicitly), small bounds."""
    from backend.media.settings import get_image_fetch_settings

    monkeypatch.setenv("QUORUM_IMAGE_FETCH_HOSTS", '["127.0.0.1"]')
    monkeypatch.setenv("QUORUM_IMAGE_FETCH_MAX_BYTES", str(MAX_BYTES))
    monkeypatch.setenv("QUORUM_IMAGE_FETCH_TIMEOUT_S", str(TIMEOUT_S))
    get_image_fetch_settings.cache_clear()
    yield
    get_image_fetch_settings.cache_clear()


@pytest.fixture
def seen_images(monkeypatch):  # noqa: ANN201
    """The images the encoder is handed, by item title (the hashing encoder ignores them)."""
    from backend.ml_adapter import service

    seen: dict[str, object] = {}
    original = service.item_inputs

    def recording(rows, images=None):  # noqa: ANN001, ANN202
        out = original(rows, images)
        seen.update({inp.title: inp.image for inp in out})
        return out

    monkeypatch.setattr(service, "item_inputs", recording)
    return seen


def _rows(base: str) -> list[dict[str, object]]:
    return [
        item_row(1, title="good photo", image=f"{base}/astronaut.jpg"),
        item_row(2, title="too large", image=f"{base}/coffee-big.jpg"),
        item_row(3, title="too slow", image=f"{base}/slow.jpg"),
        item_row(4, title="not an image", image=f"{base}/listing.html"),
        item_row(5, title="private address", image="http://10.1.2.3/photo.jpg"),
        item_row(6, title="cloud metadata", image="http://169.254.169.254/latest/meta-data/"),
        item_row(7, title="no image"),
    ]


REASONS = {
    "too large": "the limit is 60,000",
    "too slow": f"did not answer within {TIMEOUT_S:g} s",
    "not an image": "not an image (content type text/html)",
    "private address": "10.1.2.3 is private, loopback or link-local",
    "cloud metadata": "169.254.169.254 is private, loopback or link-local",
}


def _check(session, ids, good: bytes) -> dict[str, ItemImage]:  # noqa: ANN001
    from ml.hashes import pdq_hash

    titles = [r["title"] for r in _rows("")]
    by_title = dict(zip(titles, ids, strict=True))
    images = {im.item_id: im for im in session.scalars(select(ItemImage))}
    got = {t: images.get(i) for t, i in by_title.items()}
    assert got["no image"] is None
    ok = got["good photo"]
    assert (ok.state, ok.content_type, ok.size, ok.reason) == ("fetched", "image/jpeg",
                                                               len(good), None)
    assert ok.pdq_hash == pdq_hash(good).hex and ok.pdq_quality >= 50
    for title, reason in REASONS.items():
        assert got[title].state == "failed" and got[title].pdq_hash is None, title
        assert reason in got[title].reason, (title, got[title].reason)
    # every item has its vector and was routed (on its text where the image failed)
    vectors = set(session.scalars(select(ItemEmbedding.item_id)))
    assert set(ids) <= vectors
    states = dict(session.execute(select(ItemStatus.item_id, ItemStatus.state)).tuples().all())
    assert all(states[i] in ("queued", "decided") for i in ids), states
    return got


def test_the_embed_stage_fetches_url_images_and_records_each_failure(
        session, settings, policy, fetch_on, photo_server, seen_images, client, make_user):
    base, good = photo_server
    ids, summary = route_rows(session, settings, policy, _rows(base))
    assert summary.items == 7
    _check(session, ids, good)
    assert seen_images["good photo"] == good  # the encoder got the photo's bytes
    for title in (*REASONS, "no image"):
        assert seen_images[title] is None, title  # text only, and never a URL
    assert sorted(_Server.seen) == ["/astronaut.jpg", "/coffee-big.jpg", "/listing.html",
                                    "/slow.jpg"]  # the private addresses were never tried
    session.commit()
    # the reason is on the item, in the API and on its page
    _, token = make_user("ana", "analyst")
    body = client.get(f"/api/v1/items/{ids[1]}", headers=auth(token)).json()
    assert body["image_fetch"]["state"] == "failed"
    assert "the limit is 60,000" in body["image_fetch"]["reason"]
    body = client.get(f"/api/v1/items/{ids[0]}", headers=auth(token)).json()
    assert body["image_fetch"]["state"] == "fetched" and len(body["image_fetch"]["pdq_hash"]) == 64
    from tests.web.test_web import PASSWORD, login

    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    login(client, "mia")
    page = client.get(f"/items/{ids[3]}").text
    assert "not loaded: the URL is not an image (content type text/html) (routed on its " \
        "text)" in page


@pytest.mark.parametrize("runner", ["in-process worker", "route job"])
def test_the_worker_fetches_before_its_routing_transaction(
        session, settings, policy, fetch_on, photo_server, seen_images, monkeypatch, runner):
    """The in-process worker and the engine's ``route`` job download first, then route:
    the transaction only records what was fetched, and nothing is downloaded twice."""
    from backend.db import get_sessionmaker, utcnow
    from backend.items.service import ingest
    from backend.jobs import stages, tasks
    from backend.media import images

    base, good = photo_server
    _, ids = ingest(session=session, rows=_rows(base), policy=policy, now=utcnow())
    session.commit()
    in_txn: list[bool] = []
    real_fetch = images.fetch_remote

    def watched(refs, *, cfg=None):  # noqa: ANN001, ANN202
        in_txn.append(images._PREFETCHED.get() is not None)
        return real_fetch(refs, cfg=cfg)

    monkeypatch.setattr(images, "fetch_remote", watched)
    if runner == "route job":
        assert tasks.route(item_ids=ids)["items"] == 7
    else:
        summary = stages.route_backlog(sessions=get_sessionmaker(), settings=settings,
                                       batch_size=100)
        assert summary.items == 7
    assert in_txn[0] is False and set(in_txn[1:]) <= {True}
    assert sorted(_Server.seen) == ["/astronaut.jpg", "/coffee-big.jpg", "/listing.html",
                                    "/slow.jpg"]  # each URL once
    session.expire_all()
    _check(session, ids, good)
    assert seen_images["good photo"] == good


def test_without_an_allow_list_no_image_is_fetched(session, settings, policy, ml_on,
                                                   photo_server):
    from backend.media.settings import get_image_fetch_settings

    get_image_fetch_settings.cache_clear()
    base, _ = photo_server
    ids, _ = route_rows(session, settings, policy, [
        item_row(1, image=f"{base}/astronaut.jpg"), item_row(2, image="https://cdn.example/a.jpg")])
    loopback, named = (session.get(ItemImage, i) for i in ids)
    assert loopback.state == "failed" and "127.0.0.1 is private, loopback" in loopback.reason
    assert named.state == "failed" and "the image host cdn.example is not on the allow-list " \
        "(QUORUM_IMAGE_FETCH_HOSTS)" in named.reason
    assert _Server.seen == []
    assert {session.get(ItemStatus, i).state for i in ids} == {"queued"}


def test_a_local_image_gets_a_pdq_hash_too(session, settings, policy, ml_on, tmp_path):
    from ml.hashes import pdq_hash

    photo = tmp_path / "rocket.jpg"
    photo.write_bytes(_jpeg("rocket", width=200))
    ids, _ = route_rows(session, settings, policy, [item_row(1, image=str(photo))])
    row = session.get(ItemImage, ids[0])
    assert row.state == "local" and row.pdq_hash == pdq_hash(photo.read_bytes()).hex
    assert np.isfinite(row.pdq_quality)
