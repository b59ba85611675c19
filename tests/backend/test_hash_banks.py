"""Hash banks of known-bad images and PDQ reuse of past verdicts, through routing.

Bundled photos (scikit-image) stand for known-bad images: their PDQ hashes (and those of
their centred crops, as ``ml.hashes.pdq_hash_variants`` banks them) are imported into a
bank; items whose image is a resize, a JPEG re-encode or a centred crop of one of them
match it, other photos do not. Unbacked, a match decides nothing (shadow, the bank's
queue); once calibration backs the distance it decides, with the bank and the hash
matched in the event's provenance.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image
from sqlalchemy import func, select

from backend.db import utcnow
from backend.decisions.models import DecisionEvent
from backend.hashes.models import ItemHash
from backend.hashes.service import calibrate_distances, import_hashes, list_banks
from backend.queues.models import Queue, Task
from backend.routing.models import ShadowOutcome
from ml.hashes import pdq_hash_variants
from tests.backend.conftest import human_verdict, route_rows
from tests.conftest import auth, item_row
from tests.ml.conftest import photo

BAD = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"]
OTHER = ["camera", "coins", "moon", "hubble_deep_field", "cell"]


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(im: Image.Image, m: float) -> Image.Image:
    w, h = im.size
    return im.crop((int(w * m), int(h * m), int(w * (1 - m)), int(h * (1 - m))))


VARIANTS = {"half": lambda im: im.resize((im.width // 2, im.height // 2)),
            "thumb": lambda im: im.resize((160, 160 * im.height // im.width)),
            "jpeg30": lambda im: _jpeg(im, 30), "jpeg70": lambda im: _jpeg(im, 70),
            "crop5": lambda im: _crop(im, 0.05), "crop10": lambda im: _crop(im, 0.10),
            "crop10jpeg": lambda im: _jpeg(_crop(im, 0.10), 50)}


def _files(settings, names, variants, tag):  # noqa: ANN001, ANN202
    d = settings.data_dir / "images"
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        for v in variants:
            path = d / f"{tag}-{name}-{v}.png"
            (VARIANTS[v](photo(name)) if v in VARIANTS else photo(name)).save(path)
            out.append((name, v, str(path)))
    return out


def _rows(files, start):  # noqa: ANN001, ANN202
    return [item_row(start + i, title=f"photo {name} {v}", image=path)
            for i, (name, v, path) in enumerate(files)]


def _bank(session, policy, label="prohibited"):  # noqa: ANN001, ANN202
    hashes = [(h.hex, f"{name}#{i}") for name in BAD
              for i, h in enumerate(pdq_hash_variants(photo(name)))]
    return import_hashes(session=session, bank="known-bad", label=label, hashes=hashes,
                         policy=policy, now=utcnow())


def _queue_of(session, ids):  # noqa: ANN001, ANN202
    return dict(session.execute(select(Task.item_id, Queue.kind).join(
        Queue, Queue.id == Task.queue_id).where(Task.item_id.in_(ids))).tuples().all())


def test_an_unbacked_bank_matches_in_shadow_and_routes_to_people(session, settings, policy):
    r = _bank(session, policy)
    assert r.added == len(BAD) * 7 and r.already == 0
    again = _bank(session, policy)
    assert again.added == 0 and again.already == r.added  # idempotent
    near = _files(settings, BAD, list(VARIANTS), "near")
    far = _files(settings, OTHER, ["original", "half"], "far")
    ids, summary = route_rows(session, settings, policy, _rows(near + far, 0))
    near_ids, far_ids = ids[:len(near)], ids[len(near):]
    assert session.scalar(select(func.count()).select_from(ItemHash)) == len(ids)
    assert session.scalar(select(func.count()).select_from(DecisionEvent)) == 0
    queue = _queue_of(session, ids)
    assert all(queue[i] == "HASH_MATCH" for i in near_ids)  # every resize, re-encode, crop
    assert not any(queue[i] == "HASH_MATCH" for i in far_ids)  # no other photo
    shadows = session.scalars(select(ShadowOutcome).where(ShadowOutcome.source == "hash")).all()
    assert {s.item_id for s in shadows} == set(near_ids)
    s = shadows[0]
    assert s.label == "prohibited" and s.band == "bank:known-bad" and s.routed_to == "HASH_MATCH"
    assert s.details["bank"] == "known-bad" and len(s.details["bank_hash"]) == 64
    assert "not backed" in s.reason or "no calibration" in s.reason
    assert summary.queued["HASH_MATCH"] == len(near_ids)
    assert list_banks(session=session)[0]["state"] == "shadow"


def test_a_backed_bank_decides_with_the_bank_and_hash_in_the_event(session, settings, policy):
    _bank(session, policy)
    history = _files(settings, BAD, list(VARIANTS), "past") + \
        _files(settings, OTHER, list(VARIANTS)[:3], "okpast")
    ids, _ = route_rows(session, settings, policy, _rows(history, 0))
    for (name, _v, _p), item_id in zip(history, ids, strict=True):
        human_verdict(session, item_id, "prohibited" if name in BAD else "ok")
    backing = calibrate_distances(session=session, now=utcnow(), target=0.9)
    bank = backing["bank:known-bad"]
    assert bank["backed"] and bank["n_auto"] == len(BAD) * len(VARIANTS)
    assert bank["precision"] == 1.0 and bank["lower"] >= 0.9
    assert list_banks(session=session)[0]["state"] == "live"
    fresh = _files(settings, BAD, ["jpeg30", "crop5"], "new") + \
        _files(settings, OTHER, ["jpeg70"], "newok")
    new_ids, summary = route_rows(session, settings, policy, _rows(fresh, 1000))
    events = {e.item_id: e for e in session.scalars(select(DecisionEvent).where(
        DecisionEvent.item_id.in_(new_ids)))}
    bad_ids = new_ids[:len(BAD) * 2]
    assert set(events) >= set(bad_ids)
    for i in bad_ids:
        e = events[i]
        assert (e.source, e.label) == ("hash", "prohibited")
        assert e.inputs["bank"] == "known-bad" and len(e.inputs["bank_hash"]) == 64
        assert e.inputs["distance"] <= e.inputs["max_distance"] == bank["threshold"]
        assert e.content_hash is not None
    assert summary.decided["hash"] == len(bad_ids)
    assert summary.labels["hash:prohibited"] == len(bad_ids)
    assert not any(events[i].source == "hash" for i in new_ids[len(bad_ids):] if i in events)


def test_pdq_reuses_past_verdicts_of_near_duplicates_once_backed(session, settings, policy):
    past = _files(settings, BAD, ["original", "half", "jpeg70", "crop5"], "p") + \
        _files(settings, OTHER, ["original", "half", "jpeg70", "crop5"], "q")
    ids, _ = route_rows(session, settings, policy, _rows(past, 0))
    for (name, _v, _p), item_id in zip(past, ids, strict=True):
        human_verdict(session, item_id, "adult" if name in BAD else "ok")
    fresh = _files(settings, BAD + OTHER, ["jpeg30"], "n")
    new_ids, _ = route_rows(session, settings, policy, _rows(fresh, 500))
    shadow = {s.item_id: s for s in session.scalars(select(ShadowOutcome).where(
        ShadowOutcome.source == "similarity", ShadowOutcome.item_id.in_(new_ids)))}
    assert set(shadow) == set(new_ids)  # unbacked: recorded, not decided
    assert shadow[new_ids[0]].encoder_id == "pdq" and shadow[new_ids[0]].label == "adult"
    assert shadow[new_ids[-1]].label == "ok"
    backing = calibrate_distances(session=session, now=utcnow(), target=0.85)
    assert backing["pdq_reuse"]["backed"], backing["pdq_reuse"]
    more = _files(settings, BAD + OTHER, ["thumb"], "m")
    more_ids, summary = route_rows(session, settings, policy, _rows(more, 900))
    events = {e.item_id: e for e in session.scalars(select(DecisionEvent).where(
        DecisionEvent.item_id.in_(more_ids), DecisionEvent.source == "similarity"))}
    assert set(events) == set(more_ids)
    for (name, _v, _p), item_id in zip(more, more_ids, strict=True):
        e = events[item_id]
        assert e.label == ("adult" if name in BAD else "ok")
        assert e.inputs["encoder_id"] == "pdq" and e.similar_item_id in ids


def test_hash_bank_api_and_cli(client, make_user, settings):
    _, token = make_user("ana", "analyst")
    _, mod = make_user("mo", "moderator")
    h = pdq_hash_variants(photo("rocket"))[0].hex
    body = {"label": "prohibited", "hashes": [{"hash": h, "ref": "case-1"}]}
    r = client.post("/api/v1/hash-banks/known-bad/hashes", json=body, headers=auth(token))
    assert r.status_code == 200 and r.json()["added"] == 1, r.text
    r = client.post("/api/v1/hash-banks/known-bad/hashes", json=body, headers=auth(token))
    assert r.json() == {"bank": "known-bad", "label": "prohibited", "received": 1,
                        "added": 0, "already": 1}
    bad = client.post("/api/v1/hash-banks/known-bad/hashes", headers=auth(token),
                      json={"label": "prohibited", "hashes": [{"hash": "z" * 64}]})
    assert bad.status_code == 422 and "hex" in bad.json()["message"]
    other = client.post("/api/v1/hash-banks/known-bad/hashes", headers=auth(token),
                        json={"label": "ok", "hashes": [{"hash": h}]})
    assert other.status_code == 422 and "prohibited" in other.json()["message"]
    listed = client.get("/api/v1/hash-banks", headers=auth(token)).json()
    assert listed[0]["hashes"] == 1 and listed[0]["state"] == "shadow"
    assert client.get("/api/v1/hash-banks", headers=auth(mod)).status_code == 403
    if not settings.resolved_database_url.startswith("sqlite"):
        return
    from tests.backend.test_cli import quorum

    f = settings.data_dir / "bank.txt"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("hash,ref\n" + "\n".join(x.hex + ",c" for x in
                                          pdq_hash_variants(photo("coffee"))) + "\n")
    out = quorum(settings, "hashes", "import", str(f), "--label", "adult", "--bank", "adult-1")
    assert out.returncode == 0 and "7 hash(es) added" in out.stdout, out.stderr
    out = quorum(settings, "hashes", "list")
    assert "adult-1" in out.stdout and "shadow" in out.stdout
    f.write_text(h + "\nnot-a-hash\n")
    out = quorum(settings, "hashes", "import", str(f), "--label", "adult")
    assert out.returncode == 2 and "line 2" in out.stderr and "Traceback" not in out.stderr
    out = quorum(settings, "hashes", "calibrate")
    assert out.returncode == 0 and "pdq_reuse" in out.stdout


@pytest.mark.parametrize("label", ["nope"])
def test_an_unknown_label_is_refused(session, policy, label):
    from backend.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match="unknown label"):
        import_hashes(session=session, bank="b", label=label, hashes=[("0" * 64, None)],
                      policy=policy, now=utcnow())


def test_reimporting_keeps_a_banks_action(session, policy):
    from backend.hashes.service import get_bank

    import_hashes(session=session, bank="r", label="adult", hashes=[("1" * 64, None)],
                  policy=policy, now=utcnow(), action="route", queue_kind="ADULT_CHECK")
    import_hashes(session=session, bank="r", label="adult", hashes=[("2" * 64, None)],
                  policy=policy, now=utcnow())
    bank = get_bank(session=session, name="r")
    assert (bank.action, bank.queue_kind) == ("route", "ADULT_CHECK")
    from backend.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match="queue kind"):
        import_hashes(session=session, bank="r", label="adult", hashes=[], policy=policy,
                      now=utcnow(), queue_kind="bad kind")


def test_hash_distances_listed_with_thresholds_live_shadow_off(client, make_user, settings,
                                                                policy):
    """A backed bank's distance is live with its bound, a routing bank off, all off when
    hashing is switched off — in GET /api/v1/thresholds, on /admin/thresholds and
    in `quorum thresholds list`, beside the cut-offs."""
    from backend.db import session_scope
    from backend.hashes.service import hash_states
    from tests.web.test_web import PASSWORD, login

    with session_scope(settings.resolved_database_url) as session:
        _bank(session, policy)
        import_hashes(session=session, bank="watch", label="adult", action="route",
                      hashes=[(pdq_hash_variants(photo("coffee"))[0].hex, None)],
                      policy=policy, now=utcnow())
        history = _files(settings, BAD, list(VARIANTS), "past") + \
            _files(settings, OTHER, list(VARIANTS)[:3], "okpast")
        ids, _ = route_rows(session, settings, policy, _rows(history, 0))
        for (name, _v, _p), item_id in zip(history, ids, strict=True):
            human_verdict(session, item_id, "prohibited" if name in BAD else "ok")
        before = {s.key: s for s in hash_states(session=session)}
        backing = calibrate_distances(session=session, now=utcnow(), target=0.9)
    assert before["bank:known-bad"].state == before["pdq_reuse"].state == "shadow"
    assert "no calibration run" in before["pdq_reuse"].reason
    bank = backing["bank:known-bad"]
    reuse = backing["pdq_reuse"]
    assert bank["backed"] and reuse["backed"]

    _, token = make_user("ana", "analyst", password=PASSWORD)
    sets = client.get("/api/v1/thresholds", headers=auth(token)).json()
    active = next(s for s in sets if s["state"] == "active")
    states = {d["key"]: d for d in active["hash_distances"]}
    assert list(states) == ["bank:known-bad", "bank:watch", "pdq_reuse"]
    live = states["bank:known-bad"]
    assert live["state"] == "live" and live["value"] == bank["threshold"]
    assert live["label"] == "prohibited" and live["lower"] == pytest.approx(bank["lower"])
    assert live["n_auto"] == bank["n_auto"] and live["target"] == 0.9
    assert states["bank:watch"]["state"] == "off" and "routes" in states["bank:watch"]["reason"]
    assert states["pdq_reuse"]["state"] == "live"
    assert states["pdq_reuse"]["value"] == reuse["threshold"]
    assert all(s["hash_distances"] == [] for s in sets if s["state"] != "active")

    login(client, "ana")
    page = client.get("/admin/thresholds").text
    assert "Hash distances" in page and "bank:known-bad" in page and "pdq_reuse" in page
    row = page[page.index("<td>bank:known-bad</td>"):][:600]
    assert "live" in row and f"{100 * bank['lower']:.1f} %" in row

    with session_scope(settings.resolved_database_url) as session:
        off = hash_states(session=session, settings=get_hash_settings_off())
    assert {s.state for s in off} == {"off"} and "QUORUM_HASH_ENABLED" in off[0].reason
    if settings.resolved_database_url.startswith("sqlite"):
        from tests.backend.test_cli import quorum

        out = quorum(settings, "thresholds", "list")
        assert out.returncode == 0, out.stderr
        assert "Hash distances" in out.stdout and "bank:known-bad" in out.stdout
        assert "pdq_reuse" in out.stdout and "live" in out.stdout


def get_hash_settings_off():  # noqa: ANN201
    from backend.hashes.settings import HashSettings

    return HashSettings(enabled=False)
