"""Web security: the session cookie, the secret key that signs it, CSRF, response headers.

The session cookie is ``<random id>.<HMAC-SHA256 of it with the secret key>``. The id
names a row of ``web_sessions`` (only its SHA-256 is stored, see
``backend.users.sessions``), which holds the session's CSRF token, its expiry and, once
it is over, when and why it ended: logout, a password change and deactivation end it on
the server, so a copied cookie stops working at once. The signature means a database
reader cannot make a cookie, and a cookie cannot be made without the key.

Every state-changing request carries the session's CSRF token (a hidden ``csrf`` form
field, or the ``X-CSRF-Token`` header for the work view's fetch calls). The login form,
which has no session yet, uses a double-submit token (a cookie and the same value in the
form).

The server refuses to start (``quorum serve``, ``backend.asgi``) without a secret key of
at least 32 bytes, or with a key that was ever published (the old default).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from backend.errors import QuorumError
from backend.settings import Settings

SESSION_COOKIE = "quorum_session"
LOGIN_CSRF_COOKIE = "quorum_login_csrf"
SESSION_MAX_AGE = 12 * 3600  # one working day
MIN_SECRET_BYTES = 32
#: Keys that were published (in this repository's history, docs or examples).
KNOWN_KEYS = frozenset({"change-me-in-production", "changeme", "secret", "s3cret",
                        "test-secret"})

#: A per-process key for an app built without one (tests, ``create_app`` in a script).
#: The server never runs on it: ``require_secret_key`` refuses to start first.
_EPHEMERAL_KEY = secrets.token_urlsafe(32)


class InsecureSecretKey(QuorumError):
    exit_code = 2
    code = "insecure_secret_key"


# --- the secret key -------------------------------------------------------------------------

def secret_key_problem(settings: Settings) -> str | None:
    """Why the configured key must not be used, as a sentence; None when it is fine."""
    key = settings.resolved_secret_key()
    fix = ("set QUORUM_SECRET_KEY to a long random value (e.g. `export QUORUM_SECRET_KEY="
           "$(openssl rand -hex 32)`), or run `quorum demo`, which writes one to "
           f"{settings.secret_key_file}")
    if not key:
        return f"no secret key is configured: {fix}"
    if key in KNOWN_KEYS:
        return f"the secret key is a published default, so anyone can forge a login: {fix}"
    if len(key.encode()) < MIN_SECRET_BYTES:
        return (f"the secret key is {len(key.encode())} bytes; it must be at least "
                f"{MIN_SECRET_BYTES}: {fix}")
    return None


def require_secret_key(settings: Settings) -> None:
    """Refuse to serve with a missing, short or published key (``InsecureSecretKey``)."""
    problem = secret_key_problem(settings)
    if problem:
        raise InsecureSecretKey(f"refusing to start the server: {problem}")


def signing_key(settings: Settings) -> str:
    """The key that signs cookies: the configured one if it is sound, else a random
    per-process key (an app built in a test; the server itself refuses to start then)."""
    if secret_key_problem(settings) is None:
        return settings.resolved_secret_key()
    return _EPHEMERAL_KEY


def ensure_secret_key_file(settings: Settings) -> bool:
    """Write a random key to ``secret_key_file`` (mode 0600) unless a key is configured
    or the file exists. Returns whether it wrote one (``quorum demo`` calls this)."""
    path = settings.secret_key_file
    if settings.secret_key is not None or path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return True


# --- the cookie -----------------------------------------------------------------------------

def _mac(secret: str, token: str) -> str:
    mac = hmac.new(secret.encode(), b"quorum-session\x00" + token.encode(),
                   hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def sign_session_token(secret: str, token: str) -> str:
    return f"{token}.{_mac(secret, token)}"


def unsign_session_token(secret: str, cookie: str | None) -> str | None:
    """The session id in a cookie, or None if it is missing, malformed or not signed by
    ``secret``. Whether the session is still alive is the database's to say."""
    if not cookie or cookie.count(".") != 1 or len(cookie) > 200:
        return None
    token, mac = cookie.split(".")
    if not token or not hmac.compare_digest(mac, _mac(secret, token)):
        return None
    return token


def tokens_match(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def cookie_secure(settings: Settings, scheme: str) -> bool:
    return settings.cookie_secure or scheme == "https"


# --- response headers -----------------------------------------------------------------------

#: Every page: scripts and styles only from Quorum's own files (no inline script or
#: style), images from Quorum only (item photos go through ``/items/{id}/image``), no
#: framing, forms post only to Quorum.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
#: The API reference pages (``/docs``, ``/redoc``: Swagger UI and ReDoc from Quorum's own
#: assets, ``backend.web.apidocs``) run no inline script either, but the two libraries
#: inject styles and use ``data:`` icons and a ``blob:`` worker; they show no item data.
DOCS_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; worker-src 'self' blob:; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
DOCS_PATHS = ("/docs", "/redoc")
#: The analysts' reports are self-contained HTML files (also written to disk for offline
#: reading): inline CSS and ``data:`` plots, no script at all.
REPORT_CSP = ("default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
              "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
REPORT_PATHS = ("/reports/thresholds", "/reports/class-mix")
HEADERS = {
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
    b"cross-origin-opener-policy": b"same-origin",
    b"permissions-policy": b"camera=(), microphone=(), geolocation=()",
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]


class SecurityHeaders:
    """ASGI middleware: the headers above on every HTTP response (a header the route
    already set is kept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        csp = DOCS_CSP if path.startswith(DOCS_PATHS) else \
            REPORT_CSP if path.startswith(REPORT_PATHS) else CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in (*HEADERS.items(),
                                    (b"content-security-policy", csp.encode())):
                    if name not in present:
                        headers.append((name, value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
