"""Signed session cookies and CSRF tokens for the web UI (HMAC-SHA256 with ``secret_key``).

The session cookie holds ``{"u": user_id, "t": issued_at, "c": csrf_token}`` as base64
JSON plus an HMAC of it; it is ``HttpOnly`` and ``SameSite=Lax``. Every state-changing
request carries the session's CSRF token (a hidden ``csrf`` form field, or the
``X-CSRF-Token`` header for the work view's fetch calls); the token is bound to the
session, so a cross-site form cannot guess it. The login form, which has no session
yet, uses a double-submit token (a cookie and the same value in the form).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

SESSION_COOKIE = "quorum_session"
LOGIN_CSRF_COOKIE = "quorum_login_csrf"
SESSION_MAX_AGE = 12 * 3600  # one working day


@dataclass(frozen=True)
class WebSession:
    user_id: int
    issued_at: int
    csrf: str


def _sign(secret: str, payload: bytes) -> str:
    mac = hmac.new(secret.encode(), b"quorum-session\x00" + payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def make_session(secret: str, user_id: int, now: float | None = None) -> tuple[str, WebSession]:
    sess = WebSession(user_id=user_id, issued_at=int(now if now is not None else time.time()),
                      csrf=secrets.token_urlsafe(24))
    raw = json.dumps({"u": sess.user_id, "t": sess.issued_at, "c": sess.csrf},
                     separators=(",", ":")).encode()
    payload = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return f"{payload}.{_sign(secret, payload.encode())}", sess


def read_session(secret: str, cookie: str | None, now: float | None = None) -> WebSession | None:
    """The session in a cookie, or None if it is missing, forged, malformed or expired."""
    if not cookie or cookie.count(".") != 1:
        return None
    payload, mac = cookie.split(".")
    if not hmac.compare_digest(mac, _sign(secret, payload.encode())):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        sess = WebSession(user_id=int(data["u"]), issued_at=int(data["t"]), csrf=str(data["c"]))
    except (ValueError, KeyError, TypeError):
        return None
    if (now if now is not None else time.time()) - sess.issued_at > SESSION_MAX_AGE:
        return None
    return sess


def tokens_match(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
