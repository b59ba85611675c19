"""Input limits: every bad input gets a 4xx with Quorum's error body, never a 500."""

from __future__ import annotations

import json
import unicodedata

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from backend.items.models import Item
from tests.conftest import auth, item_row

ITEMS = "/api/v1/items"


@pytest.fixture
def admin(make_user) -> dict[str, str]:  # noqa: ANN001
    return auth(make_user("lim-admin", "admin")[1])


def _error(resp, status: int) -> dict:  # noqa: ANN001
    """The response has ``status`` and Quorum's error body with a sentence."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) >= {"error", "message"} and len(body["message"]) > 10, body
    return body


def _count(settings) -> int:  # noqa: ANN001
    from backend.db import session_scope

    with session_scope(settings.resolved_database_url) as s:
        return s.scalar(select(func.count()).select_from(Item))


# ---------------------------------------------------------------- body size
@pytest.fixture
def small_body_client(settings, monkeypatch):  # noqa: ANN001, ANN201
    from backend.app import create_app
    from backend.limits import get_limit_settings

    monkeypatch.setenv("QUORUM_LIMIT_MAX_BODY_BYTES", "20000")
    get_limit_settings.cache_clear()
    with TestClient(create_app(database_url=settings.resolved_database_url),
                    raise_server_exceptions=False) as c:
        yield c
    get_limit_settings.cache_clear()


def test_body_over_the_limit_is_refused_with_413(small_body_client, admin, settings):
    rows = [item_row(i, description="x" * 1000) for i in range(30)]  # ~33 KB
    body = _error(small_body_client.post(ITEMS, headers=admin, json=rows), 413)
    assert body["error"] == "payload_too_large" and "20,000 bytes" in body["message"]
    # a chunked body (no Content-Length) is counted as it arrives
    data = json.dumps(rows).encode()
    resp = small_body_client.post(ITEMS, headers={**admin, "Content-Type": "application/json"},
                                  content=iter([data[:10000], data[10000:]]))
    _error(resp, 413)
    assert _count(settings) == 0
    ok = small_body_client.post(ITEMS, headers=admin, json=rows[:5])
    assert ok.status_code == 200, ok.text


# ---------------------------------------------------------------- per-field limits
@pytest.mark.parametrize("metadata, words", [
    ({"blob": "x" * 100_000}, "bytes as JSON; the limit is"),
    ({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}, "nests deeper"),
    ({f"k{i}": i for i in range(500)}, "500 entries"),
    ({"k" * 300: 1}, "300 characters long"),
    ({"bad\x00key": 1}, "NUL"),
    ({"k": ["fine", "bad\x00value"]}, "NUL"),
])
def test_metadata_limits(client, admin, settings, metadata, words):
    body = _error(client.post(ITEMS, headers=admin, json=[item_row(1, metadata=metadata)]), 422)
    errors = body["details"]["errors"]
    assert errors[0]["field"] == "metadata" and words in errors[0]["message"], errors
    assert _count(settings) == 0


def test_nan_in_metadata_is_refused(client, admin, settings):
    raw = json.dumps([item_row(1, metadata={"score": 0.5})]).replace("0.5", "NaN")
    resp = client.post(ITEMS, headers={**admin, "Content-Type": "application/json"},
                       content=raw)
    body = _error(resp, 422)
    assert "finite" in json.dumps(body)
    assert _count(settings) == 0


@pytest.mark.parametrize("field", ["title", "description", "source", "external_id",
                                   "category", "seller_id"])
def test_nul_in_text_refuses_that_row_only(client, admin, settings, field):
    rows = [item_row(i) for i in range(200)]
    rows[57][field] = "has a \x00 NUL"
    body = _error(client.post(ITEMS, headers=admin, json=rows), 422)
    assert body["details"]["errors"] == [
        {"row": 58, "field": field, "message": "Value error, must not contain a NUL "
                                               "character (\\u0000)"}]
    resp = client.post(ITEMS, headers=admin, params={"partial": "true"}, json=rows)
    assert resp.status_code == 207, resp.text
    assert resp.json()["created"] == 199 and _count(settings) == 199


def test_too_long_fields_and_batches(client, admin, settings, monkeypatch):
    body = _error(client.post(ITEMS, headers=admin, json=[item_row(1, title="t" * 2001)]), 422)
    assert body["details"]["errors"][0]["field"] == "title"
    monkeypatch.setattr(settings, "max_ingest_batch", 3)
    body = _error(client.post(ITEMS, headers=admin, json=[item_row(i) for i in range(4)]), 422)
    assert "at most 3 items" in body["message"]


# ---------------------------------------------------------------- ids and parameters
@pytest.mark.parametrize("method, path", [
    ("get", "/api/v1/items/{n}"),
    ("get", "/api/v1/items/{n}/neighbours"),
    ("post", "/api/v1/tasks/{n}/skip"),
    ("post", "/api/v1/tasks/{n}/release"),
    ("post", "/api/v1/thresholds/{n}/apply"),
    ("get", "/api/v1/crowd/pools/{n}"),
    ("get", "/api/v1/calibration/runs/{n}"),
])
def test_ids_beyond_the_integer_range(client, admin, method, path):
    for n in (2**31, 2**63, 10**30):
        _error(getattr(client, method)(path.format(n=n), headers=admin), 422)


def test_verdict_and_rule_ids_beyond_the_range(client, admin):
    resp = client.post(f"/api/v1/tasks/{2**40}/verdict", headers=admin, json={"label": "ok"})
    _error(resp, 422)
    _error(client.get(f"/api/v1/rules/{10**30}", headers=admin), 404)
    resp = client.post("/api/v1/rules", headers=admin, json={
        "name": "big", "expression": "true", "action": "tag", "tag": "t",
        "position": 2**40})
    assert _error(resp, 422)["details"][0]["field"] == "position"


def test_parameters_are_bounded(client, admin):
    resp = client.post("/api/v1/calibration/runs", headers=admin, json={"folds": 100_000})
    assert _error(resp, 422)["details"][0]["field"] == "folds"
    client.post("/api/v1/rules", headers=admin, json={
        "name": "r", "expression": "true", "action": "tag", "tag": "t"})
    _error(client.post("/api/v1/rules/r/backtest", headers=admin,
                       params={"limit": 10**12}), 422)
    _error(client.get("/api/v1/items/1/neighbours", headers=admin, params={"k": 10**6}), 422)


# ---------------------------------------------------------------- grants
@pytest.mark.parametrize("kinds, words", [
    (["GL", "GL"], "listed twice"),
    (["A" * 65], "pattern"),
    (["NEW_PRODUCT"], "unknown queue kind 'NEW_PRODUCT'"),
    (["gl"], "pattern"),
])
def test_bad_grants_refused(client, admin, make_user, kinds, words):
    make_user("mo", "moderator", kinds=["GL"])
    body = _error(client.put("/api/v1/users/mo/grants", headers=admin,
                             json={"queue_kinds": kinds}), 422)
    assert words in json.dumps(body)
    body = _error(client.post("/api/v1/users", headers=admin, json={
        "username": "new", "role": "moderator", "queue_kinds": kinds}), 422)
    assert words in json.dumps(body)


def test_known_grants_accepted(client, admin, make_user):
    make_user("mo", "moderator")
    resp = client.put("/api/v1/users/mo/grants", headers=admin,
                      json={"queue_kinds": ["NEW_PRODUCTS", "GL"]})
    assert resp.status_code == 200 and resp.json()["queue_kinds"] == ["GL", "NEW_PRODUCTS"]
    client.post("/api/v1/rules", headers=admin, json={
        "name": "to-custom", "expression": "false", "action": "route",
        "queue_kind": "CUSTOM_REVIEW"})
    resp = client.put("/api/v1/users/mo/grants", headers=admin,
                      json={"queue_kinds": ["CUSTOM_REVIEW", "*"]})
    assert resp.status_code == 200, resp.text


# ---------------------------------------------------------------- bodies FastAPI cannot parse
def test_unparsable_bodies_get_quorum_errors(client, admin):
    headers = {**admin, "Content-Type": "application/json"}
    deep = "[" * 5000 + "]" * 5000
    body = _error(client.post(ITEMS, headers=headers, content=deep), 422)
    assert "not valid JSON" in body["message"]
    body = _error(client.post(ITEMS, headers=headers, content=b'[{"title": "\xff\xfe"}]'), 422)
    assert "UTF-8" in body["message"]
    _error(client.post(ITEMS, headers=headers, content=b"[{"), 422)
    _error(client.get("/api/v1/no-such-route", headers=admin), 404)
    _error(client.delete("/api/v1/items/1", headers=admin), 405)


def test_integrity_errors_become_409(client, admin, monkeypatch):
    from sqlalchemy.exc import IntegrityError

    from backend.rules import router

    def boom(**_):  # noqa: ANN003, ANN202
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    monkeypatch.setattr(router.service, "create_rule", boom)
    body = _error(client.post("/api/v1/rules", headers=admin, json={
        "name": "r", "expression": "true", "action": "tag", "tag": "t"}), 409)
    assert body["error"] == "conflict"


# ---------------------------------------------------------------- unicode keys
def test_keys_are_nfc_normalised(client, admin, settings):
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert composed != decomposed and unicodedata.normalize("NFC", decomposed) == composed
    first = client.post(ITEMS, headers=admin, json=[item_row(1, external_id=composed,
                                                             source=f"sh{decomposed}p")])
    again = client.post(ITEMS, headers=admin, json=[item_row(1, external_id=decomposed,
                                                             source=f"sh{composed}p")])
    assert first.json()["created"] == 1 and again.json()["unchanged"] == 1, again.text
    assert _count(settings) == 1
    both = client.post(ITEMS, headers=admin, json=[item_row(2, external_id=composed),
                                                   item_row(2, external_id=decomposed)])
    assert _error(both, 422)["details"]["errors"][0]["message"].startswith("duplicate of row 1")
    resp = client.get(f"/api/v1/items/by-key/sh{composed}p/{decomposed}", headers=admin)
    assert resp.status_code == 200 and resp.json()["external_id"] == composed


# ---------------------------------------------------------------- the OpenAPI schema
def test_openapi_documents_the_errors(client):
    spec = client.get("/openapi.json").json()
    assert "ErrorBody" in spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        if path == "/healthz":
            continue
        for method, op in ops.items():
            for status in ("401", "403", "404", "409", "413", "422"):
                ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorBody"), (method, path, status)


def test_cli_checks_grants(settings, db_url):
    from tests.backend.test_cli import quorum

    if not db_url.startswith("sqlite"):
        pytest.skip("the CLI is exercised once; the checks it calls run on both backends")
    r = quorum(settings, "users", "add", "mia", "--grant", "NEW_PRODUCT")
    assert r.returncode == 2 and "unknown queue kind 'NEW_PRODUCT'" in r.stderr, r.stderr
    r = quorum(settings, "users", "add", "mia", "--grant", "GL", "--grant", "GL")
    assert r.returncode == 2 and "listed twice" in r.stderr, r.stderr
    assert quorum(settings, "users", "add", "mia", "--grant", "GL").returncode == 0
    r = quorum(settings, "users", "grant", "mia", "GL", "NOPE")
    assert r.returncode == 2 and "unknown queue kind 'NOPE'" in r.stderr
    assert "Traceback" not in r.stderr
