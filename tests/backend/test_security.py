"""Access (issue 10, items 7-11): the secret key, revocable sessions and tokens, account
management (API and CLI, audited), login rate limits, http(s)-only item URLs, the safe
image fetcher. The web pages' side is in tests/web/test_web_security.py."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from backend.db import get_engine, session_scope
from backend.users.models import AuditEntry, User
from tests.conftest import auth, item_row

ROOT = Path(__file__).resolve().parent.parent.parent
GOOD_KEY = "k" * 40


def _env(settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")}
    env.update({"QUORUM_DATABASE_URL": settings.resolved_database_url,
                "QUORUM_DATA_DIR": str(settings.data_dir), "QUORUM_ML_ENABLED": "false",
                "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    env.update(extra)
    return env


def quorum(settings, *args: str, input: str | None = None, timeout: float = 120,
           **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backend.cli", *args], capture_output=True,
                          text=True, env=_env(settings, **env), input=input, timeout=timeout,
                          cwd=ROOT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sqlite_only(db_url):  # noqa: ANN001, ANN201
    if not db_url.startswith("sqlite"):
        pytest.skip("a subprocess check, run once; the services it calls run on both backends")


def _audit(settings, action: str) -> list[AuditEntry]:
    with session_scope(settings.resolved_database_url) as s:
        rows = list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)
                              .order_by(AuditEntry.id)))
        s.expunge_all()
        return rows


# ---------------------------------------------------------------- 7. the secret key

def _old_style_cookie(secret: str, user_id: int) -> str:
    """A session cookie as the old code minted it (base64 JSON + HMAC of the secret)."""
    raw = json.dumps({"u": user_id, "t": int(time.time()), "c": "x" * 32},
                     separators=(",", ":")).encode()
    payload = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    mac = hmac.new(secret.encode(), b"quorum-session\x00" + payload.encode(),
                   hashlib.sha256).digest()
    return f"{payload}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def test_a_cookie_forged_with_the_old_default_key_reads_and_changes_nothing(client, make_user,
                                                                            settings):
    admin_id, _ = make_user("root", "admin")
    victim_id, _ = make_user("vic", "moderator")
    cookie = _old_style_cookie("change-me-in-production", admin_id)
    client.cookies.set("quorum_session", cookie)
    r = client.get("/admin/users", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    r = client.post(f"/admin/users/{victim_id}/role", data={"role": "admin", "csrf": "x" * 32},
                    headers={"X-CSRF-Token": "x" * 32}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    with session_scope(settings.resolved_database_url) as s:
        assert s.get(User, victim_id).role == "moderator"


@pytest.mark.parametrize("key, why", [
    (None, "no secret key is configured"),
    ("change-me-in-production", "published default"),
    ("short-key-of-20-bytes", "it must be at least 32"),
])
def test_serve_refuses_to_start_with_a_missing_default_or_short_key(settings, sqlite_only,
                                                                    key, why):
    extra = {"QUORUM_SECRET_KEY": key} if key else {}
    r = quorum(settings, "serve", "--port", str(_free_port()), timeout=60, **extra)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "refusing to start the server" in r.stderr and why in r.stderr
    assert "QUORUM_SECRET_KEY" in r.stderr and "Traceback" not in r.stderr


def test_the_asgi_app_refuses_to_load_without_a_sound_key(settings, sqlite_only):
    code = [sys.executable, "-c", "import backend.asgi"]
    r = subprocess.run(code, capture_output=True, text=True, env=_env(settings), timeout=120,
                       cwd=ROOT)
    assert r.returncode == 1 and "refusing to start the server" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run(code, capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env=_env(settings, QUORUM_SECRET_KEY=GOOD_KEY))
    assert r.returncode == 0, r.stderr


def test_the_demo_key_file_is_private_and_lets_the_server_start(settings, sqlite_only):
    from backend.web.security import ensure_secret_key_file, secret_key_problem

    assert secret_key_problem(settings) is not None
    assert ensure_secret_key_file(settings) is True
    path = settings.data_dir / "secret_key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(path.read_text().strip()) >= 32
    assert ensure_secret_key_file(settings) is False  # kept: sessions survive a re-run
    assert secret_key_problem(settings) is None
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "serve", "--port", str(port)],
                            env=_env(settings), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.fail(f"the server did not start: {out[-2000:]}")
                time.sleep(0.3)
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# ---------------------------------------------------------------- 8/9. tokens and accounts (API)

def test_a_revoked_token_stops_working_at_once(client, make_user):
    _, admin = make_user("root", "admin")
    uid, token = make_user("mia", "moderator")
    assert client.get("/api/v1/users/me", headers=auth(token)).status_code == 200
    tokens = client.get("/api/v1/users/mia/tokens", headers=auth(admin)).json()
    assert [t["prefix"] for t in tokens] == [token[:12]] and tokens[0]["revoked_at"] is None
    r = client.post(f"/api/v1/users/mia/tokens/{tokens[0]['id']}/revoke", headers=auth(admin))
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    r = client.get("/api/v1/users/me", headers=auth(token))
    assert r.status_code == 401 and "revoked" in r.json()["message"]
    new = client.post("/api/v1/users/mia/tokens", json={"name": "laptop"}, headers=auth(admin))
    assert new.status_code == 201 and new.json()["name"] == "laptop"
    assert client.get("/api/v1/users/me", headers=auth(new.json()["token"])).status_code == 200
    r = client.post("/api/v1/users/mia/tokens/999999/revoke", headers=auth(admin))
    assert r.status_code == 404 and "no API token with id 999999" in r.json()["message"]


def test_deactivation_stops_tokens_and_reactivation_restores_them(client, make_user, settings):
    _, admin = make_user("root", "admin")
    _, token = make_user("mia", "moderator")
    r = client.post("/api/v1/users/mia/deactivate", headers=auth(admin))
    assert r.status_code == 200 and r.json()["is_active"] is False
    assert client.get("/api/v1/users/me", headers=auth(token)).status_code == 401
    r = client.post("/api/v1/users/mia/reactivate", headers=auth(admin))
    assert r.status_code == 200 and r.json()["is_active"] is True
    assert client.get("/api/v1/users/me", headers=auth(token)).status_code == 200
    entries = _audit(settings, "user.deactivate") + _audit(settings, "user.reactivate")
    assert [(e.target_id, e.details["via"]) for e in entries] == [("mia", "api"), ("mia", "api")]
    assert all(e.user_id is not None for e in entries)


def test_roles_change_and_the_last_admin_is_kept(client, make_user, settings):
    _, admin = make_user("root", "admin")
    _, token = make_user("mia", "moderator")
    assert client.get("/api/v1/users", headers=auth(token)).status_code == 403
    r = client.put("/api/v1/users/mia/role", json={"role": "admin"}, headers=auth(admin))
    assert r.status_code == 200 and r.json()["role"] == "admin"
    assert client.get("/api/v1/users", headers=auth(token)).status_code == 200
    r = client.put("/api/v1/users/mia/role", json={"role": "boss"}, headers=auth(admin))
    assert r.status_code == 422
    # two admins: one may step down; then the other is the last and may not
    assert client.put("/api/v1/users/root/role", json={"role": "analyst"},
                      headers=auth(admin)).status_code == 200
    r = client.put("/api/v1/users/mia/role", json={"role": "moderator"}, headers=auth(token))
    assert r.status_code == 409 and "last active admin" in r.json()["message"]
    r = client.post("/api/v1/users/mia/deactivate", headers=auth(token))
    assert r.status_code == 409 and "last active admin" in r.json()["message"]
    changes = [(e.target_id, e.details["from"], e.details["to"])
               for e in _audit(settings, "user.role")]
    assert changes == [("mia", "moderator", "admin"), ("root", "admin", "analyst")]


def test_password_set_and_reset_through_the_api_are_audited_without_the_password(
        client, make_user, settings):
    _, admin = make_user("root", "admin")
    make_user("mia", "moderator", password="old-password-1")
    r = client.put("/api/v1/users/mia/password", json={"password": "short"},
                   headers=auth(admin))
    assert r.status_code == 422
    r = client.put("/api/v1/users/mia/password", json={"password": "new-password-2"},
                   headers=auth(admin))
    assert r.status_code == 200 and r.json() == {"sessions_ended": 0}
    r = client.post("/api/v1/users/mia/password/reset", headers=auth(admin))
    assert r.status_code == 200
    generated = r.json()["password"]
    assert len(generated) >= 12
    from backend.users.service import authenticate_password

    with session_scope(settings.resolved_database_url) as s:
        assert authenticate_password(session=s, username="mia", password=generated)
    entries = _audit(settings, "user.password")
    assert [e.details["reset"] for e in entries] == [False, True]
    assert all("new-password-2" not in json.dumps(e.details) and
               generated not in json.dumps(e.details) for e in entries)


def test_account_commands_on_the_command_line(settings, make_user, sqlite_only):
    make_user("root", "admin")
    _, token = make_user("mia", "moderator")
    r = quorum(settings, "users", "tokens", "mia")
    assert r.returncode == 0 and token[:12] in r.stdout
    r = quorum(settings, "users", "role", "mia", "analyst")
    assert r.returncode == 0 and "mia is now analyst" in r.stdout
    r = quorum(settings, "users", "role", "mia", "boss")
    assert r.returncode == 2 and "role must be one of" in r.stderr
    r = quorum(settings, "users", "deactivate", "mia")
    assert r.returncode == 0 and "deactivated" in r.stdout
    r = quorum(settings, "users", "list")
    assert "mia" in r.stdout and "no" in r.stdout
    r = quorum(settings, "users", "reactivate", "mia")
    assert r.returncode == 0
    r = quorum(settings, "users", "password", "mia", "--generate")
    assert r.returncode == 0
    generated = r.stdout.strip().splitlines()[-1]
    r = quorum(settings, "users", "password", "mia", input="typed-password-3\ntyped-password-3\n")
    assert r.returncode == 0, r.stderr
    with session_scope(settings.resolved_database_url) as s:
        from backend.users.service import authenticate_password, get_user, list_tokens

        assert authenticate_password(session=s, username="mia", password="typed-password-3")
        token_id = list_tokens(session=s, user=get_user(session=s, username="mia"))[0].id
    r = quorum(settings, "users", "revoke-token", "mia", str(token_id))
    assert r.returncode == 0 and "revoked" in r.stdout
    r = quorum(settings, "users", "token", "mia", "--name", "ci")
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1].startswith("qrm_")
    r = quorum(settings, "users", "logout", "mia")
    assert r.returncode == 0 and "0 web session(s)" in r.stdout
    r = quorum(settings, "users", "deactivate", "nobody")
    assert r.returncode == 3 and "no user 'nobody'" in r.stderr and "Traceback" not in r.stderr
    r = quorum(settings, "users", "deactivate", "root")
    assert r.returncode == 4 and "last active admin" in r.stderr
    actions = [e.action for e in _all_audit(settings) if (e.details or {}).get("via") == "cli"]
    assert actions == ["user.role", "user.deactivate", "user.reactivate", "user.password",
                       "user.password", "token.revoke", "token.create", "user.sessions_end"]
    assert generated not in json.dumps([e.details for e in _all_audit(settings)])
    from backend.errors import Unauthorized
    from backend.users.service import authenticate_token

    with session_scope(settings.resolved_database_url) as s, \
            pytest.raises(Unauthorized, match="revoked"):
        authenticate_token(session=s, token=token)


def _all_audit(settings) -> list[AuditEntry]:
    with session_scope(settings.resolved_database_url) as s:
        rows = list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))
        s.expunge_all()
        return rows


# ---------------------------------------------------------------- 10. rate limits, shared storage

def test_the_database_storage_counts_exactly_across_processes(settings):
    """Several engines (as several worker processes have) hitting one counter at once:
    every hit is counted once, and a limiter reads what another one counted."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from backend.users.ratelimit import LoginLimiter
    from backend.users.settings import LoginSettings

    url = settings.resolved_database_url
    conf = LoginSettings(limit_per_account="40/hour", limit_per_address="41/hour",
                         rate_limit_storage="database")
    kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
    engines = [create_engine(url, poolclass=NullPool, **kwargs) for _ in range(4)]
    limiters = [LoginLimiter(conf, e) for e in engines]

    def hammer(limiter: LoginLimiter) -> None:
        for _ in range(10):
            limiter.failed(username="Mia", address="10.0.0.1")

    threads = [threading.Thread(target=hammer, args=(lim,)) for lim in limiters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fresh = LoginLimiter(conf, get_engine(url))  # another process, later
    item = fresh.per_account[0]
    assert fresh.storage.get(item.key_for("login", "account:mia")) == 40
    refusal = fresh.check(username="mia", address="10.0.0.2")  # case-folded account
    assert refusal is not None and refusal.scope == "account" and refusal.retry_after_s > 3500
    assert fresh.check(username="someone", address="10.0.0.1") is None  # 40 < 41
    fresh.failed(username="someone", address="10.0.0.1")
    assert fresh.check(username="other", address="10.0.0.1").scope == "address"
    for e in engines:
        e.dispose()


def test_a_bad_limit_setting_is_refused_with_a_sentence(monkeypatch):
    from pydantic import ValidationError

    from backend.users.settings import LoginSettings

    with pytest.raises(ValidationError, match="not a rate limit"):
        LoginSettings(limit_per_account="five per minute")


# ---------------------------------------------------------------- 11. item URLs at ingest

@pytest.mark.parametrize("field, value", [
    ("url", "javascript:alert(document.cookie)"),
    ("url", "data:text/html,<script>alert(1)</script>"),
    ("url", "/relative/path"),
    ("image", "file:///etc/passwd"),
    ("image", "javascript:alert(1)"),
    ("image", "//evil.example/a.png"),
])
def test_an_item_url_that_is_not_http_is_refused_at_ingest(client, make_user, field, value):
    _, token = make_user("ana", "analyst")
    r = client.post("/api/v1/items", json={"items": [item_row(1, **{field: value})]},
                    headers=auth(token))
    assert r.status_code == 422, r.text
    text = json.dumps(r.json())
    assert "http:// or https:// URL" in text and field in text


def test_http_urls_and_local_image_paths_are_accepted(client, make_user):
    _, token = make_user("ana", "analyst")
    rows = [item_row(1, url="https://shop.example/item/1", image="https://cdn.example/1.jpg"),
            item_row(2, url="http://shop.example/item/2", image="demo/images/2.jpg")]
    r = client.post("/api/v1/items", json={"items": rows}, headers=auth(token))
    assert r.status_code in (200, 201), r.text


# ---------------------------------------------------------------- 11. the safe fetcher

def _png(size: int = 8) -> bytes:
    from PIL import Image

    buf = BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes, float]] = {}
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(self.path)
        status, headers, body, delay = self.routes.get(self.path, (404, {}, b"", 0.0))
        time.sleep(delay)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def image_server():  # noqa: ANN201
    png = _png()
    _Handler.seen = []
    _Handler.routes = {
        "/a.png": (200, {"Content-Type": "image/png"}, png, 0.0),
        "/page.html": (200, {"Content-Type": "text/html"}, b"<html>hi</html>", 0.0),
        "/lies.png": (200, {"Content-Type": "image/png"}, b"<svg onload=alert(1)>", 0.0),
        "/big.png": (200, {"Content-Type": "image/png"}, png + b"\0" * 300_000, 0.0),
        "/slow.png": (200, {"Content-Type": "image/png"}, png, 3.0),
        "/to-metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"", 0),
        "/to-a": (302, {"Location": "/a.png"}, b"", 0.0),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", png
    finally:
        server.shutdown()
        server.server_close()


def test_the_fetcher_gets_an_image_from_an_allow_listed_local_server(image_server):
    from backend.media.fetch import FetchFailed, FetchPolicy, FetchRefused, fetch_image

    base, png = image_server
    policy = FetchPolicy(allow_hosts=("127.0.0.1",), max_bytes=100_000, timeout_s=1.0)
    got = fetch_image(f"{base}/a.png", policy=policy)
    assert got.content == png and got.content_type == "image/png"
    assert fetch_image(f"{base}/to-a", policy=policy).content == png  # relative redirect
    with pytest.raises(FetchRefused, match="not an image"):
        fetch_image(f"{base}/page.html", policy=policy)
    with pytest.raises(FetchRefused, match="not a JPEG, PNG, GIF or WebP"):
        fetch_image(f"{base}/lies.png", policy=policy)
    with pytest.raises(FetchRefused, match="the limit is 100,000"):
        fetch_image(f"{base}/big.png", policy=policy)
    with pytest.raises(FetchFailed, match="did not answer within 1 s"):
        fetch_image(f"{base}/slow.png", policy=policy)
    with pytest.raises(FetchFailed, match="answered 404"):
        fetch_image(f"{base}/missing.png", policy=policy)
    _Handler.seen.clear()
    with pytest.raises(FetchRefused, match="169.254.169.254"):
        fetch_image(f"{base}/to-metadata", policy=policy)  # the redirect target is checked
    assert _Handler.seen == ["/to-metadata"]


@pytest.fixture
def no_network(monkeypatch):  # noqa: ANN201
    """Any attempt to resolve or connect fails the test: refusals come first."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a connection or lookup was attempted: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("url, allow, reason", [
    ("http://169.254.169.254/latest/meta-data/", ("*",), "link-local"),
    ("http://169.254.169.254/latest/meta-data/", ("cdn.example",), "link-local"),
    ("http://[::ffff:169.254.169.254]/", ("*",), "169.254.169.254 is private"),
    ("http://10.1.2.3/a.png", ("*",), "private"),
    ("http://127.0.0.1:8080/a.png", ("*",), "loopback"),
    ("http://0.0.0.0/a.png", ("*",), "private"),
    ("http://evil.example/a.png", ("cdn.example", "*.img.example"), "not on the allow-list"),
    ("http://img.example.evil/a.png", ("*.img.example",), "not on the allow-list"),
    ("http://8.8.8.8/a.png", ("cdn.example",), "not on the allow-list"),
    ("ftp://cdn.example/a.png", ("*",), "only http and https"),
    ("http://user:pw@cdn.example/a.png", ("*",), "user name or password"),
])
def test_the_fetcher_refuses_before_connecting(no_network, url, allow, reason):
    from backend.media.fetch import FetchPolicy, FetchRefused, fetch_image

    with pytest.raises(FetchRefused, match=reason):
        fetch_image(url, policy=FetchPolicy(allow_hosts=allow))


def test_an_allow_listed_name_that_resolves_to_a_private_address_is_refused(no_network):
    from backend.media.fetch import FetchPolicy, FetchRefused, check_url

    policy = FetchPolicy(allow_hosts=("cdn.example", "10.9.0.0/16"))
    with pytest.raises(FetchRefused, match=r"private, loopback or link-local address \(10\.1"):
        check_url("https://cdn.example/a.png", policy=policy,
                  resolver=lambda host, port: ["93.184.216.34", "10.1.2.3"])
    target = check_url("https://cdn.example/a.png", policy=policy,
                       resolver=lambda host, port: ["10.9.8.7"])  # its network is listed
    assert str(target.address) == "10.9.8.7" and target.host == "cdn.example"
