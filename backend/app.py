"""The FastAPI application factory."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from backend.errors import QuorumError

log = logging.getLogger("quorum")


def _validation_details(exc: RequestValidationError) -> list[dict[str, object]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        out.append({"field": ".".join(loc) or None, "message": err.get("msg")})
    return out


def create_app(*, database_url: str | None = None) -> FastAPI:
    from backend.db import get_sessionmaker
    from backend.items.router import router as items_router
    from backend.queues.router import router as queues_router
    from backend.rules.router import router as rules_router
    from backend.users.router import router as users_router

    app = FastAPI(title="Quorum", version="0.1.0", docs_url=None, redoc_url=None,
                  description="Human-in-the-loop content moderation. Authenticate with "
                              "`Authorization: Bearer <token>` (`quorum users add`).")
    app.state.sessionmaker = get_sessionmaker(database_url)

    @app.exception_handler(QuorumError)
    async def _domain_error(request: Request, exc: QuorumError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "validation_failed", "message": "the request is not valid",
                             "details": _validation_details(exc)}, status_code=422)

    @app.exception_handler(OperationalError)
    async def _db_down(request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database error: %s", exc)
        return JSONResponse({"error": "unavailable", "message": "the database is unavailable; "
                             "retry later"}, status_code=503)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal", "message": "internal error; it was logged"},
                            status_code=500)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        with app.state.sessionmaker() as s:
            s.execute(text("SELECT 1"))
        return {"status": "ok"}

    from backend.web.apidocs import router as apidocs_router

    for router in (items_router, rules_router, queues_router, users_router, apidocs_router):
        app.include_router(router)
    for extra in _extra_routers():
        app.include_router(extra)
    return app


def _extra_routers() -> list:
    """Routers of the later domains (ML, crowd, calibration, reports, web), if present."""
    import importlib

    routers = []
    for mod in ("backend.ml_adapter.router", "backend.crowdwork.router",
                "backend.calibration.router", "backend.reports.router", "backend.web.router",
                "backend.web.item_pages", "backend.appeals.router"):
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name == mod:
                continue
            raise
        routers.append(module.router)
    return routers
