"""Signed, expiring image URLs for people outside Quorum (Toloka's workers).

A crowd task never carries a local path or a third-party URL: it carries
``<QUORUM_MEDIA_PUBLIC_BASE_URL>/api/v1/media/signed/<token>``, which Quorum answers with
the item's image (``backend/media/router.py``). The token is
``<item id>.<expiry, unix seconds>.<signature>``, the signature being the unpadded
base64url HMAC-SHA256 of ``quorum-media-v1:<item id>:<expiry>`` under
``QUORUM_SECRET_KEY`` (the standard library's ``hmac``, compared in constant time). A
URL works until its expiry (``QUORUM_MEDIA_SIGNED_URL_TTL_SECONDS`` after the push), for
that item only; changing a digit of the id or the expiry breaks the signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

from backend.errors import Forbidden, ValidationFailed
from backend.media.settings import MediaSettings, get_media_settings
from backend.settings import Settings, get_settings

ROUTE = "/api/v1/media/signed/"
MAX_TOKEN = 200


class BadSignature(Forbidden):
    """A signed media URL that is expired, altered or not Quorum's."""

    code = "bad_signature"


def _key(settings: Settings) -> str:
    from backend.web.security import secret_key_problem

    problem = secret_key_problem(settings)
    if problem:
        raise ValidationFailed(f"signed image URLs need the secret key: {problem}")
    return settings.resolved_secret_key()


def _mac(key: str, item_id: int, expires: int) -> str:
    digest = hmac.new(key.encode(), f"quorum-media-v1:{item_id}:{expires}".encode(),
                      hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(*, item_id: int, expires: int, settings: Settings | None = None) -> str:
    """The token for ``item_id``'s image, valid until ``expires`` (unix seconds)."""
    key = _key(settings or get_settings())
    return f"{int(item_id)}.{int(expires)}.{_mac(key, int(item_id), int(expires))}"


def verify(token: str, *, now: datetime, settings: Settings | None = None) -> int:
    """The item id a token was signed for; ``BadSignature`` (a sentence) otherwise."""
    settings = settings or get_settings()
    parts = token.split(".") if len(token) <= MAX_TOKEN else []
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        raise BadSignature("this is not a signed image link of Quorum's")
    item_id, expires = int(parts[0]), int(parts[1])
    try:
        key = _key(settings)
    except ValidationFailed as exc:
        raise BadSignature("this server cannot check signed image links (no usable secret "
                           "key)") from exc
    if not hmac.compare_digest(parts[2].encode(), _mac(key, item_id, expires).encode()):
        raise BadSignature("the signature of this image link is not valid (altered, or "
                           "signed with another key)")
    if now.timestamp() > expires:
        raise BadSignature(f"this image link expired at "
                           f"{datetime.fromtimestamp(expires, UTC).isoformat()}; "
                           "a new push signs new links")
    return item_id


def signed_url(*, item_id: int, now: datetime, media: MediaSettings | None = None,
               settings: Settings | None = None) -> str:
    """The public URL of ``item_id``'s image, valid ``signed_url_ttl_seconds`` from ``now``."""
    media = media or get_media_settings()
    base = media.public_base_url.strip().rstrip("/")
    if not base.lower().startswith(("http://", "https://")):
        raise ValidationFailed(
            "items with an image need QUORUM_MEDIA_PUBLIC_BASE_URL (where the crowd reaches "
            "Quorum, e.g. https://quorum.example.com) to be pushed to the crowd: tasks carry "
            "signed image URLs, never file paths")
    expires = int(now.timestamp()) + media.signed_url_ttl_seconds
    return f"{base}{ROUTE}{sign(item_id=item_id, expires=expires, settings=settings)}"
