"""The authorization matrix: every API route × role → allowed or 403; no token → 401.

Adding a route means adding it here: the test fails on a route it does not know.
"""

import re

import pytest

from tests.conftest import auth

ALL = {"moderator", "analyst", "admin"}
STAFF = {"analyst", "admin"}
MODS = {"moderator", "admin"}
ADMIN = {"admin"}
#: Public routes whose authorization is a signature in the URL: no token is needed, and a
#: token (any role's) opens nothing without a valid signature (403, never 401).
SIGNED = {"signed-url"}

MATRIX: dict[tuple[str, str], set[str]] = {
    ("POST", "/api/v1/items"): STAFF,
    ("GET", "/api/v1/items/{item_id}"): ALL,
    ("GET", "/api/v1/items/by-key/{source}/{external_id}"): ALL,
    ("GET", "/api/v1/rules"): STAFF,
    ("POST", "/api/v1/rules"): STAFF,
    ("GET", "/api/v1/rules/{name}"): STAFF,
    ("PATCH", "/api/v1/rules/{name}"): STAFF,
    ("DELETE", "/api/v1/rules/{name}"): STAFF,
    ("POST", "/api/v1/rules/{name}/backtest"): STAFF,
    ("POST", "/api/v1/rules/{name}/dry-run"): STAFF,
    ("GET", "/api/v1/rules/{name}/runs/{run_id}"): STAFF,
    ("POST", "/api/v1/rules/{name}/promote"): STAFF,
    ("GET", "/api/v1/rules/{name}/versions"): STAFF,
    ("GET", "/api/v1/queues"): ALL,
    ("GET", "/api/v1/queues/capacity"): ALL,
    ("POST", "/api/v1/tasks/lease"): MODS,
    ("POST", "/api/v1/tasks/{task_id}/verdict"): MODS,
    ("POST", "/api/v1/tasks/{task_id}/skip"): MODS,
    ("POST", "/api/v1/tasks/{task_id}/release"): MODS,
    ("GET", "/api/v1/users/me"): ALL,
    ("GET", "/api/v1/users"): ADMIN,
    ("POST", "/api/v1/users"): ADMIN,
    ("PUT", "/api/v1/users/{username}/grants"): ADMIN,
    ("GET", "/api/v1/users/{username}/tokens"): ADMIN,
    ("POST", "/api/v1/users/{username}/tokens"): ADMIN,
    ("POST", "/api/v1/users/{username}/tokens/{token_id}/revoke"): ADMIN,
    ("POST", "/api/v1/users/{username}/deactivate"): ADMIN,
    ("POST", "/api/v1/users/{username}/reactivate"): ADMIN,
    ("PUT", "/api/v1/users/{username}/role"): ADMIN,
    ("PUT", "/api/v1/users/{username}/password"): ADMIN,
    ("POST", "/api/v1/users/{username}/password/reset"): ADMIN,
    ("POST", "/api/v1/users/{username}/sessions/end"): ADMIN,
    ("GET", "/api/v1/items/{item_id}/neighbours"): ALL,
    ("GET", "/api/v1/thresholds"): STAFF,
    ("POST", "/api/v1/thresholds/{version}/apply"): STAFF,
    ("POST", "/api/v1/thresholds/{version}/edit"): STAFF,
    ("POST", "/api/v1/calibration/runs"): STAFF,
    ("GET", "/api/v1/calibration/runs/{run_id}"): STAFF,
    ("GET", "/api/v1/calibration/what-if"): STAFF,
    ("GET", "/api/v1/crowd/pools"): STAFF,
    ("GET", "/api/v1/crowd/pools/{pool_id}"): STAFF,
    ("GET", "/api/v1/crowd/report"): STAFF,
    ("POST", "/api/v1/items/{item_id}/appeals"): STAFF,
    ("GET", "/api/v1/items/{item_id}/appeals"): ALL,
    ("GET", "/api/v1/appeals"): STAFF,
    ("GET", "/api/v1/appeals/rates"): STAFF,
    ("GET", "/api/v1/appeals/{appeal_id}"): ALL,
    ("GET", "/api/v1/decisions/{event_id}/statement"): ALL,
    ("GET", "/api/v1/statements"): STAFF,
    ("POST", "/api/v1/imports/verdicts"): STAFF,
    ("GET", "/api/v1/decisions"): ALL,
    ("POST", "/api/v1/webhooks"): ADMIN,
    ("GET", "/api/v1/webhooks"): ADMIN,
    ("DELETE", "/api/v1/webhooks/{subscription_id}"): ADMIN,
    ("GET", "/api/v1/webhooks/dead"): ADMIN,
    ("POST", "/api/v1/webhooks/dead/replay"): ADMIN,
    ("GET", "/api/v1/jobs"): ADMIN,
    ("GET", "/api/v1/media/signed/{token}"): SIGNED,
    ("GET", "/api/v1/hash-banks"): STAFF,
    ("POST", "/api/v1/hash-banks/{name}/hashes"): STAFF,
    ("GET", "/api/v1/replay"): STAFF,
    ("POST", "/api/v1/replay"): STAFF,
}


def _api_routes(app):
    """Every (method, path) of the API, from the OpenAPI schema (FastAPI nests included
    routers, so ``app.routes`` does not list them flat)."""
    routes = {(method.upper(), path)
              for path, ops in app.openapi()["paths"].items() if path.startswith("/api/")
              for method in ops if method in ("get", "post", "put", "patch", "delete")}
    assert len(routes) >= 15, "the API routes were not found"
    return routes


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_api_route_is_in_the_matrix(client):
    routes = set(_api_routes(client.app))
    assert routes - set(MATRIX) == set(), "add these routes to the authorization matrix"


def test_matrix(client, make_user):
    tokens = {role: make_user(f"u_{role}", role, ["MANUAL"])[1] for role in ALL}
    failures = []
    for method, path in sorted(set(_api_routes(client.app))):
        url = _concrete(path)
        if MATRIX.get((method, path)) is SIGNED:
            for who, headers in [("no token", {}), ("a wrong token", auth("wrong")),
                                 *((role, auth(t)) for role, t in tokens.items())]:
                r = client.request(method, url, headers=headers)
                if r.status_code != 403 or not r.json().get("message"):
                    failures.append(f"{method} {path} unsigned, with {who} → {r.status_code} "
                                    "(should be 403 with a sentence)")
            continue
        r = client.request(method, url, json={})
        if r.status_code != 401:
            failures.append(f"{method} {path} without token → {r.status_code}")
        r = client.request(method, url, json={}, headers={"Authorization": "Bearer wrong"})
        if r.status_code != 401:
            failures.append(f"{method} {path} with a wrong token → {r.status_code}")
        allowed = MATRIX.get((method, path), set())
        for role, token in tokens.items():
            r = client.request(method, url, json={}, headers=auth(token))
            if role in allowed and r.status_code in (401, 403):
                failures.append(f"{method} {path} as {role} → {r.status_code} (should pass)")
            if role not in allowed and r.status_code != 403:
                failures.append(f"{method} {path} as {role} → {r.status_code} (should be 403)")
    assert not failures, "\n".join(failures)


def test_moderator_limited_to_granted_queues(client, make_user):
    from tests.conftest import item_row

    _, admin = make_user("root", "admin")
    _, manual = make_user("m1", "moderator", ["MANUAL"])
    _, gmv = make_user("m2", "moderator", ["GMV"])
    client.post("/api/v1/items", json=[item_row(1, is_new=False)], headers=auth(admin))
    assert client.post("/api/v1/tasks/lease", headers=auth(gmv)).json()["task"] is None
    queue = client.get("/api/v1/queues", headers=auth(admin)).json()[0]["name"]
    r = client.post("/api/v1/tasks/lease", json={"queue": queue}, headers=auth(gmv))
    assert r.status_code == 403 and "may not work" in r.json()["message"]
    task = client.post("/api/v1/tasks/lease", headers=auth(manual)).json()["task"]
    r = client.post(f"/api/v1/tasks/{task['id']}/verdict", json={"label": "ok"},
                    headers=auth(gmv))
    assert r.status_code == 403
    assert client.get("/api/v1/queues", headers=auth(gmv)).json() == []


@pytest.mark.parametrize("header", ["Bearer ", "Basic abc", "token"])
def test_malformed_auth_headers_are_401(client, header):
    r = client.get("/api/v1/users/me", headers={"Authorization": header})
    assert r.status_code == 401 and r.json()["message"]
