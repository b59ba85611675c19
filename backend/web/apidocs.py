"""API reference pages (`/docs`, `/redoc`) that work offline.

FastAPI's defaults load Swagger UI and ReDoc from a CDN, so both pages are blank on a
machine without network. The assets come from the `fastapi-offline` package (which ships
Swagger UI and the ReDoc standalone bundle) and are served here; the pages themselves carry
no inline script (Swagger UI is started by ``/static/apidocs.js``), so they pass a CSP
without ``'unsafe-inline'``.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from backend.errors import NotFound

ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
_ALLOWED = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
            "redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}

router = APIRouter(include_in_schema=False)

_SWAGGER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Quorum API — Swagger UI</title>
<link rel="icon" href="/docs-assets/favicon.png">
<link rel="stylesheet" href="/docs-assets/swagger-ui.css">
</head><body>
<div id="swagger-ui" data-openapi-url="/openapi.json"></div>
<script src="/docs-assets/swagger-ui-bundle.js"></script>
<script src="/static/apidocs.js"></script>
</body></html>
"""

_REDOC = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Quorum API — ReDoc</title>
<link rel="icon" href="/docs-assets/favicon.png">
</head><body>
<redoc spec-url="/openapi.json"></redoc>
<script src="/docs-assets/redoc.standalone.js"></script>
</body></html>
"""


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    return HTMLResponse(_SWAGGER)


@router.get("/redoc")
def redoc() -> HTMLResponse:
    return HTMLResponse(_REDOC)


@router.get("/docs-assets/{name}")
def asset(name: str) -> FileResponse:
    media_type = _ALLOWED.get(name)
    if media_type is None:
        raise NotFound(f"no API documentation asset {name!r}")
    return FileResponse(ASSETS / name, media_type=media_type,
                        headers={"Cache-Control": "public, max-age=86400"})
