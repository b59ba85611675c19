"""The web UI's access control (issue 10, items 8-11): sessions end on the server, the
admin's account page, login rate limits, security headers, images only through Quorum."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from backend.db import session_scope, utcnow
from backend.items.service import ingest
from backend.policy import get_policy
from backend.queues import service as queues
from backend.users.models import ApiToken, AuditEntry, User, WebSession
from tests.conftest import auth, item_row
from tests.web.test_web import PASSWORD, _csrf, login

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "backend" / "web" / "templates"


@pytest.fixture
def app_factory(settings):  # noqa: ANN001, ANN201
    """New clients of one app: separate cookie jars, as separate browsers have."""
    from backend.app import create_app

    app = create_app(database_url=settings.resolved_database_url)
    clients: list[TestClient] = []

    def make() -> TestClient:
        c = TestClient(app, raise_server_exceptions=False)
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture(autouse=True)
def _fresh_login_settings():  # noqa: ANN202
    from backend.media.settings import get_image_proxy_settings
    from backend.users.settings import get_login_settings

    get_login_settings.cache_clear()
    get_image_proxy_settings.cache_clear()
    yield
    get_login_settings.cache_clear()
    get_image_proxy_settings.cache_clear()


def _page_csrf(html: str) -> str:
    m = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def _queue(settings, kind: str, rows: list[dict]) -> list[int]:
    with session_scope(settings.resolved_database_url) as s:
        _, ids = ingest(session=s, rows=rows, policy=get_policy())
        queues.enqueue(session=s, kind=kind, item_ids=ids, now=utcnow(), settings=settings)
        return ids


# ---------------------------------------------------------------- 8. sessions end on the server

def _copied_session(app_factory, username: str) -> tuple[TestClient, str, str]:
    """Log in on one client; return it, the cookie and its CSRF token (a copy of both)."""
    browser = app_factory()
    assert login(browser, username).status_code == 303
    cookie = browser.cookies.get("quorum_session")
    csrf = _page_csrf(browser.get("/queues").text)
    return browser, cookie, csrf


def _still_works(app_factory, cookie: str, csrf: str) -> tuple[int, int]:
    thief = app_factory()
    thief.cookies.set("quorum_session", cookie)
    get = thief.get("/queues", follow_redirects=False).status_code
    post = thief.post("/work/start", data={"csrf": csrf, "queue": ""},
                      headers={"X-CSRF-Token": csrf}, follow_redirects=False)
    post_ok = post.status_code == 303 and not post.headers["location"].startswith("/login")
    return get, post_ok


def test_logout_ends_the_session_for_every_copy_of_the_cookie(app_factory, make_user, settings):
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    browser, cookie, csrf = _copied_session(app_factory, "mia")
    assert _still_works(app_factory, cookie, csrf) == (200, True)  # the copy works while live
    r = browser.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert _still_works(app_factory, cookie, csrf) == (303, False)
    with session_scope(settings.resolved_database_url) as s:
        row = s.scalars(select(WebSession)).one()
        assert row.ended_reason == "logout" and row.ended_at is not None


def test_a_password_change_and_a_deactivation_end_sessions(app_factory, make_user, settings):
    _, admin = make_user("root", "admin")
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    api = app_factory()
    _, cookie, csrf = _copied_session(app_factory, "mia")
    r = api.put("/api/v1/users/mia/password", json={"password": "another-pass-9"},
                headers=auth(admin))
    assert r.json() == {"sessions_ended": 1}
    assert _still_works(app_factory, cookie, csrf) == (303, False)
    assert login(app_factory(), "mia", PASSWORD).status_code == 401
    _, cookie, csrf = _copied_session_with(app_factory, "mia", "another-pass-9")
    api.post("/api/v1/users/mia/deactivate", headers=auth(admin))
    assert _still_works(app_factory, cookie, csrf) == (303, False)
    assert login(app_factory(), "mia", "another-pass-9").status_code == 401
    api.post("/api/v1/users/mia/reactivate", headers=auth(admin))
    assert _still_works(app_factory, cookie, csrf) == (303, False)  # stays ended
    assert login(app_factory(), "mia", "another-pass-9").status_code == 303
    with session_scope(settings.resolved_database_url) as s:
        reasons = sorted(r.ended_reason or "live" for r in s.scalars(select(WebSession)))
    assert reasons == ["deactivated", "live", "password"]


def _copied_session_with(app_factory, username: str, password: str):  # noqa: ANN202
    browser = app_factory()
    assert login(browser, username, password).status_code == 303
    return browser, browser.cookies.get("quorum_session"), _page_csrf(browser.get("/queues").text)


def test_the_cookie_holds_no_user_id_and_the_database_no_session_id(client, make_user, settings):
    uid, _ = make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    login(client, "mia")
    cookie = client.cookies.get("quorum_session")
    token = cookie.split(".")[0]
    with session_scope(settings.resolved_database_url) as s:
        row = s.scalars(select(WebSession)).one()
        assert row.user_id == uid and token not in (row.token_hash, row.csrf_token)
    # a cookie for a session id that was never issued, signed or not, is no session
    client.cookies.clear()
    client.cookies.set("quorum_session", "A" * 43 + "." + cookie.split(".")[1])
    assert client.get("/queues", follow_redirects=False).status_code == 303


def test_secure_cookies_can_be_forced_behind_a_tls_proxy(settings, make_user, monkeypatch):
    from backend.app import create_app
    from backend.settings import get_settings

    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    with TestClient(create_app(database_url=settings.resolved_database_url)) as c:
        r = login(c, "mia")
        assert "secure" not in r.headers["set-cookie"].lower()
    monkeypatch.setenv("QUORUM_COOKIE_SECURE", "true")
    get_settings.cache_clear()
    with TestClient(create_app(database_url=settings.resolved_database_url)) as c:
        page = c.get("/login")
        assert "secure" in page.headers["set-cookie"].lower()
        # a browser behind the TLS proxy sends it back; the test client over http would not
        c.cookies.set("quorum_login_csrf", _csrf(page.text))
        r = c.post("/login", data={"username": "mia", "password": PASSWORD,
                                   "csrf": _csrf(page.text)}, follow_redirects=False)
        assert r.status_code == 303
        cookie = [h for h in r.headers.get_list("set-cookie") if h.startswith("quorum_session=")]
        assert cookie and "secure" in cookie[0].lower() and "httponly" in cookie[0].lower()


# ---------------------------------------------------------------- 9. the admin's account page

def test_the_admin_manages_accounts_on_the_users_page(client, make_user, settings):
    make_user("root", "admin", password=PASSWORD)
    uid, token = make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    assert login(client, "root").status_code == 303
    page = client.get("/admin/users")
    assert page.status_code == 200 and token[:12] in page.text
    csrf = _page_csrf(page.text)

    def post(path: str, **data: str):  # noqa: ANN202
        return client.post(path, data={"csrf": csrf, **data}, follow_redirects=True)

    assert "mia is now analyst" in post(f"/admin/users/{uid}/role", role="analyst").text
    r = post(f"/admin/users/{uid}/tokens", name="laptop")
    new_token = re.search(r'id="one-time-secret">(qrm_[^<]+)<', r.text).group(1)
    assert r.headers["cache-control"] == "no-store"
    with session_scope(settings.resolved_database_url) as s:
        first = s.scalars(select(ApiToken).where(ApiToken.user_id == uid)
                          .order_by(ApiToken.id)).first()
        first_id = first.id
    assert "is revoked" in post(f"/admin/users/{uid}/tokens/{first_id}/revoke").text
    assert client.get("/api/v1/users/me", headers=auth(token)).status_code == 401
    assert client.get("/api/v1/users/me", headers=auth(new_token)).status_code == 200
    r = post(f"/admin/users/{uid}/password", generate="true")
    generated = re.search(r'id="one-time-secret">([^<]+)<', r.text).group(1)
    assert login(TestClient(client.app), "mia", generated).status_code == 303
    assert "deactivated" in post(f"/admin/users/{uid}/active", active="false").text
    assert "may log in again" in post(f"/admin/users/{uid}/active", active="true").text
    r = post(f"/admin/users/{uid}/password", password="short")
    assert r.status_code == 422 and "at least 8" in r.text
    # the last admin cannot lock everyone out
    with session_scope(settings.resolved_database_url) as s:
        root_id = s.scalars(select(User.id).where(User.username == "root")).one()
    r = post(f"/admin/users/{root_id}/active", active="false")
    assert r.status_code == 409 and "last active admin" in r.text
    # without the CSRF token nothing changes
    r = client.post(f"/admin/users/{uid}/role", data={"role": "admin"}, follow_redirects=False)
    assert r.status_code == 403
    with session_scope(settings.resolved_database_url) as s:
        assert s.get(User, uid).role == "analyst"
        actions = [(a.action, (a.details or {}).get("via")) for a in
                   s.scalars(select(AuditEntry).where(AuditEntry.action != "web.login")
                             .order_by(AuditEntry.id))]
    assert actions == [("user.role", "web"), ("token.create", "web"), ("token.revoke", "web"),
                       ("user.password", "web"), ("user.deactivate", "web"),
                       ("user.reactivate", "web")]


def test_moderators_cannot_use_the_account_page(client, make_user):
    make_user("root", "admin", password=PASSWORD)
    uid, _ = make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    login(client, "mia")
    csrf = _page_csrf(client.get("/queues").text)
    assert client.get("/admin/users").status_code == 403
    r = client.post(f"/admin/users/{uid}/role", data={"csrf": csrf, "role": "admin"})
    assert r.status_code == 403


# ---------------------------------------------------------------- 10. login rate limits

def test_forty_wrong_passwords_are_stopped_with_a_clear_429(client, make_user):
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    statuses = [login(client, "mia", f"guess-{i}").status_code for i in range(40)]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    r = login(client, "mia", PASSWORD)  # even the right password, until the window ends
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert "Too many failed logins for this account. Try again in" in r.text


def test_one_address_trying_many_accounts_is_stopped(client, make_user):
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    statuses = [login(client, f"user{i}", "guess").status_code for i in range(25)]
    assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}
    r = login(client, "mia", PASSWORD)
    assert r.status_code == 429 and "for your address" in r.text


def test_limits_are_settings(settings, make_user, monkeypatch):
    from backend.app import create_app

    monkeypatch.setenv("QUORUM_LOGIN_LIMIT_PER_ACCOUNT", "2/minute")
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    with TestClient(create_app(database_url=settings.resolved_database_url)) as c:
        assert [login(c, "mia", "x").status_code for _ in range(3)] == [401, 401, 429]


# ---------------------------------------------------------------- 11. headers, templates, images

def test_every_page_carries_the_security_headers(client, make_user):
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    pages = [client.get("/login"), client.get("/static/app.css"), client.get("/static/nope"),
             client.get("/api/v1/users/me")]
    login(client, "mia")
    pages += [client.get("/queues"), client.get("/stats"), client.get("/admin/users")]
    for r in pages:
        csp = r.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, r.url
        assert "unsafe-inline" not in csp, r.url
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"


def test_templates_have_no_inline_script_or_style():
    inline = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=",
                        re.IGNORECASE)
    found = [f"{p.name}: {m.group(0)}" for p in sorted(TEMPLATES.glob("*.html"))
             for m in inline.finditer(p.read_text())]
    assert not found, found


def _png() -> bytes:
    from PIL import Image

    buf = BytesIO()
    Image.new("RGB", (6, 6), (0, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def local_images():  # noqa: ANN201
    png = _png()
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", png, hits
    finally:
        server.shutdown()
        server.server_close()


def test_moderators_see_item_images_only_through_quorum(client, make_user, settings,
                                                        local_images, monkeypatch):
    base, png, hits = local_images
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    ids = _queue(settings, "MANUAL", [
        item_row(1, image=f"{base}/photo.png"),
        item_row(2, image="http://169.254.169.254/latest/meta-data/iam/"),
        item_row(3, image="http://10.0.0.7/internal.png")])
    login(client, "mia")
    pages = [client.post("/work/start", data={"csrf": _page_csrf(client.get("/queues").text)},
                         follow_redirects=True).text]
    pages.append(client.get("/queues/" + _queue_name(settings)).text)
    for html in pages:
        for src in re.findall(r'<img[^>]+src="([^"]+)"', html):
            assert src.startswith("/items/"), src
        assert "169.254.169.254" not in html and base not in html.split("<main>")[1]
    # not allow-listed (the default): refused, and nothing is fetched
    r = client.get(f"/items/{ids[0]}/image")
    assert r.status_code == 403 and "loopback" in r.text and hits == []
    monkeypatch.setenv("QUORUM_IMAGE_PROXY_HOSTS", '["127.0.0.1"]')
    from backend.media.settings import get_image_proxy_settings

    get_image_proxy_settings.cache_clear()
    r = client.get(f"/items/{ids[0]}/image")
    assert r.status_code == 200 and r.content == png and r.headers["content-type"] == "image/png"
    assert hits == ["/photo.png"]
    for item_id, reason in ((ids[1], "link-local"), (ids[2], "private")):
        r = client.get(f"/items/{item_id}/image")
        assert r.status_code == 403 and reason in r.text
    assert hits == ["/photo.png"]
    client.cookies.clear()
    assert client.get(f"/items/{ids[0]}/image", follow_redirects=False).status_code == 303


def _queue_name(settings) -> str:
    with session_scope(settings.resolved_database_url) as s:
        from backend.queues.models import Queue

        return s.scalars(select(Queue.name)).first()


def test_sessions_ended_long_ago_are_deleted_at_the_next_login(session, make_user):
    from datetime import timedelta

    from backend.users import sessions as web_sessions

    uid, _ = make_user("mia", "moderator")
    user = session.get(User, uid)
    now = utcnow()
    _, recent = web_sessions.start_session(session=session, user=user,
                                           now=now - timedelta(days=2), max_age_s=3600)
    web_sessions.start_session(session=session, user=user, now=now - timedelta(days=40),
                               max_age_s=3600)
    web_sessions.end_session(session=session, web_session=recent, now=now - timedelta(days=2),
                             reason="logout")
    token, new = web_sessions.start_session(session=session, user=user, now=now, max_age_s=3600)
    session.expire_all()
    kept = sorted(session.scalars(select(WebSession.created_at)))
    assert kept == [now - timedelta(days=2), now]  # the 40-day-old one is gone
    assert web_sessions.live_session(session=session, token=token, now=now)[1].id == uid
    assert web_sessions.live_session(session=session, token=token,
                                     now=now + timedelta(hours=2)) is None  # expired
