"""``GET /api/v1/media/signed/{token}``: an item's image for a signed, expiring link.

Public (no API token or session: Toloka's workers have neither); the signature is the
authorization (``backend/media/signing.py``). A local image is served from the data
directory; a remote one is fetched by Quorum under the image proxy's guards
(``QUORUM_IMAGE_PROXY_*``), so the crowd never sees the URL an item carries.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse, Response

from backend.db import utcnow
from backend.deps import SessionDep, SettingsDep
from backend.errors import ErrorBody, NotFound
from backend.items.models import Item
from backend.media import signing

router = APIRouter(tags=["media"])

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


@router.get(
    "/api/v1/media/signed/{token}",
    response_class=Response,
    responses={
        200: {"content": {t: {} for t in IMAGE_TYPES},
              "description": "the item's image"},
        403: {"model": ErrorBody, "description": "the link is expired, altered or not "
                                                 "Quorum's (or the remote image is refused)"},
        404: {"model": ErrorBody, "description": "the item or its image is gone"},
        502: {"model": ErrorBody, "description": "the remote image could not be fetched"},
    },
)
def signed_image(token: Annotated[str, Path(max_length=signing.MAX_TOKEN)],
                 session: SessionDep, settings: SettingsDep) -> Response:
    """The image of the item the link was signed for, until the link expires."""
    item_id = signing.verify(token, now=utcnow(), settings=settings)
    item = session.get(Item, item_id) if item_id <= 2**63 - 1 else None
    if item is None or not item.image:
        raise NotFound("the item of this image link is gone or has no image")
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "default-src 'none'"}
    if item.image.lower().startswith(("http://", "https://")):
        from backend.media.fetch import fetch_image
        from backend.media.settings import get_image_proxy_settings

        image = fetch_image(item.image, policy=get_image_proxy_settings().policy())
        return Response(image.content, media_type=image.content_type, headers=headers)
    from backend.web.service import local_image

    path, media = local_image(item=item, settings=settings)
    return FileResponse(path, media_type=media, headers=headers)
