"""Crowd tasks carry signed, expiring Quorum image URLs, never local paths
(``backend/media/signing.py``, ``GET /api/v1/media/signed/{token}``)."""

from __future__ import annotations

import io
import json
import secrets
import time
import warnings
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from backend.crowdwork.service import push_queue  # noqa: E402
from backend.crowdwork.settings import CrowdSettings  # noqa: E402
from backend.db import session_scope, utcnow  # noqa: E402
from backend.items.models import Item  # noqa: E402
from backend.items.service import ingest  # noqa: E402
from backend.queues import service as queues  # noqa: E402
from backend.queues.models import Queue  # noqa: E402
from crowd.emulator import Emulator, SimWorker  # noqa: E402
from tests.backend.test_crowd_support import LABELS, crowd_runtime  # noqa: E402
from tests.conftest import item_row  # noqa: E402

BASE = "https://quorum.test"


def _photo() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).resize((128, 128)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def signing(settings, monkeypatch):  # noqa: ANN001, ANN201
    """A server secret key and a public base URL (what a deployment sets)."""
    from backend.media.settings import get_media_settings
    from backend.settings import get_settings

    monkeypatch.setenv("QUORUM_SECRET_KEY", secrets.token_hex(32))
    monkeypatch.setenv("QUORUM_MEDIA_PUBLIC_BASE_URL", BASE + "/")
    get_settings.cache_clear()
    get_media_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
    get_media_settings.cache_clear()


def _seed(settings, policy, photo_path: str) -> tuple[str, dict[str, str], dict[str, int]]:  # noqa: ANN001
    rows = [item_row(0, title="local photo", image=photo_path),
            item_row(1, title="remote photo", image="https://cdn.example/1.jpg"),
            item_row(2, title="no photo")]
    rows += [item_row(10 + i, title=f"golden {i}", image=photo_path, external_id=f"G{i}",
                      golden_label=LABELS[i % len(LABELS)], is_golden=True) for i in range(3)]
    with session_scope() as s:
        _, ids = ingest(session=s, rows=rows, policy=policy, now=utcnow())
        items = s.scalars(select(Item).where(Item.id.in_(ids))).all()
        real = [it.id for it in items if not it.is_golden]
        queues.enqueue(session=s, kind="NEW_PRODUCTS", item_ids=real, now=utcnow(),
                       settings=settings)
        name = s.scalar(select(Queue.name).where(Queue.kind == "NEW_PRODUCTS"))
        truth = {str(it.id): it.golden_label or "ok" for it in items}
        by_title = {it.title: it.id for it in items}
    return name, truth, by_title


def test_pushed_tasks_carry_only_signed_urls_that_serve_the_image(settings, signing, policy,
                                                                 client):
    photo = _photo()
    path = settings.data_dir / "photos" / "astronaut.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(photo)
    queue, truth, ids = _seed(settings, policy, str(path))
    crowd = CrowdSettings(overlap=1, tasks_per_suite=2, golden_per_suite=1, aggregation="mv",
                          emulator_workers=3)
    with Emulator(seed=1, workers=[SimWorker("w1")], truth=truth) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url)
        pushed = push_queue(rt=rt, queue_name=queue)
        tasks = list(rt.client.get_tasks(pool_id=pushed.toloka_pool_id))
    inputs = {int(t.input_values["item_id"]): t.input_values for t in tasks}
    assert set(inputs) >= {ids["local photo"], ids["remote photo"], ids["no photo"]}
    text = json.dumps([t.input_values for t in tasks], default=str)
    assert str(settings.data_dir) not in text and "cdn.example" not in text  # no path, no URL
    images = [v["image"] for v in inputs.values() if "image" in v]
    assert len(images) == len(inputs) - 1  # every item with a photo, and only those
    assert all(url.startswith(f"{BASE}/api/v1/media/signed/") for url in images)
    assert "image" not in inputs[ids["no photo"]]

    # the signed URL serves the photo to anyone holding it (no token, no session)
    url = urlsplit(inputs[ids["local photo"]]["image"]).path
    r = client.get(url)
    assert r.status_code == 200 and r.content == photo
    assert r.headers["content-type"] == "image/jpeg"
    # another item's id with this signature: refused, with a sentence
    item_id, expires, mac = url.rsplit("/", 1)[1].split(".")
    tampered = url.replace(f"/{item_id}.", f"/{ids['remote photo']}.")
    r = client.get(tampered)
    assert r.status_code == 403 and r.json()["error"] == "bad_signature"
    assert "signature of this image link is not valid" in r.json()["message"]
    r = client.get(url.replace(f".{expires}.", f".{int(expires) + 1}."))  # a longer life
    assert r.status_code == 403 and "not valid" in r.json()["message"]
    r = client.get(url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB"))
    assert r.status_code == 403


def test_an_expired_or_malformed_link_is_refused(settings, signing, client, policy):
    from backend.media.signing import sign

    path = settings.data_dir / "a.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_photo())
    with session_scope() as s:
        _, [item_id] = ingest(session=s, rows=[item_row(1, image=str(path))], policy=policy,
                              now=utcnow())
    past = sign(item_id=item_id, expires=int(time.time()) - 5)
    r = client.get(f"/api/v1/media/signed/{past}")
    assert r.status_code == 403 and "this image link expired at" in r.json()["message"]
    fresh = sign(item_id=item_id, expires=int(time.time()) + 60)
    assert client.get(f"/api/v1/media/signed/{fresh}").status_code == 200
    for bad in ("1", "x.y.z", f"{item_id}.{int(time.time()) + 60}.", "a" * 201):
        r = client.get(f"/api/v1/media/signed/{bad}")
        assert r.status_code in (403, 422) and r.json()["message"], bad
    gone = sign(item_id=item_id + 1000, expires=int(time.time()) + 60)
    r = client.get(f"/api/v1/media/signed/{gone}")
    assert r.status_code == 404 and "gone" in r.json()["message"]


def test_a_push_without_a_secret_key_says_why(settings, policy, tmp_path):
    from backend.errors import ValidationFailed

    path = settings.data_dir / "a.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_photo())
    queue, truth, _ = _seed(settings, policy, str(path))
    crowd = CrowdSettings(overlap=1, tasks_per_suite=2, golden_per_suite=1, aggregation="mv")
    with Emulator(seed=1, workers=[SimWorker("w1")], truth=truth) as emu:
        rt = crowd_runtime(settings, crowd, policy, emu.url)
        with pytest.raises(ValidationFailed, match="signed image URLs need the secret key"):
            push_queue(rt=rt, queue_name=queue)


def test_the_crowd_push_refuses_a_local_path_in_task_inputs():
    import pandas as pd

    from crowd.push import PushPlan, check_image_urls

    ok = PushPlan(key="k", policy=[], items=pd.DataFrame(
        [{"item_id": "1", "image": "https://quorum.test/api/v1/media/signed/x"},
         {"item_id": "2", "image": None}]))
    check_image_urls(ok)
    for image in ("/var/quorum/demo/images/1.jpg", "file:///etc/passwd", "demo/1.jpg"):
        bad = PushPlan(key="k", policy=[], items=pd.DataFrame([{"item_id": "1",
                                                                 "image": image}]))
        with pytest.raises(ValueError, match="image URLs Toloka can open"):
            check_image_urls(bad)
    pairs = PushPlan(key="k", policy=[], kind="pair", items=pd.DataFrame(
        [{"item_id": "1|2", "item_a": {"image": "/tmp/a.jpg"}, "item_b": {}}]))
    with pytest.raises(ValueError, match="/tmp/a.jpg"):
        check_image_urls(pairs)
