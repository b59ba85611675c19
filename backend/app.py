"""The FastAPI application factory."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.errors import ERROR_RESPONSES, QuorumError
from backend.limits import BodySizeLimit, get_limit_settings

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

    limits = get_limit_settings()
    app = FastAPI(title="Quorum", version="0.1.0", docs_url=None, redoc_url=None,
                  description="Human-in-the-loop content moderation. Authenticate with "
                              "`Authorization: Bearer <token>` (`quorum users add`). Every "
                              "error answer has the body `{error, message, details}`.")
    app.state.sessionmaker = get_sessionmaker(database_url)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)  # 413 over the limit

    # Security headers on every response (CSP, frame, nosniff, referrer): backend/web/security.py
    from backend.web.security import SecurityHeaders

    app.add_middleware(SecurityHeaders)

    @app.exception_handler(QuorumError)
    async def _domain_error(request: Request, exc: QuorumError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "validation_failed", "message": "the request is not valid",
                             "details": _validation_details(exc)}, status_code=422)

    # -- bad input never becomes a 500 (docs/limits.md) --------------------------------
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's and FastAPI's own errors (unknown route or method, a body that is not
        JSON) in Quorum's error shape."""
        if exc.status_code == 400:  # FastAPI could not parse the body (bad UTF-8, too deep)
            return JSONResponse({"error": "validation_failed", "message": (
                "the request body is not valid JSON: it must be UTF-8 and nest at most "
                "a few hundred levels")}, status_code=422)
        code, message = {
            404: ("not_found", f"there is no route {request.url.path}; the API is listed at "
                               "/docs"),
            405: ("method_not_allowed", f"{request.method} is not allowed on "
                                        f"{request.url.path}; see /docs"),
        }.get(exc.status_code, ("bad_request", str(exc.detail)))
        if exc.detail not in ("Not Found", "Method Not Allowed"):  # a route's own sentence
            message = str(exc.detail)
        return JSONResponse({"error": code, "message": message},
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        log.warning("integrity error on %s %s: %s", request.method, request.url.path,
                    exc.orig)
        return JSONResponse({"error": "conflict", "message": (
            "the change conflicts with stored data (a duplicate, or a reference to "
            "something that does not exist); nothing was stored")}, status_code=409)

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError) -> JSONResponse:
        log.warning("data error on %s %s: %s", request.method, request.url.path, exc.orig)
        return JSONResponse({"error": "validation_failed", "message": (
            "a value does not fit the database (a number out of range or text with a NUL "
            "character); nothing was stored")}, status_code=422)

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> JSONResponse:
        return JSONResponse({"error": "validation_failed", "message": (
            "a number is out of the database's range (at most 2**31-1 for ids and "
            "counters)")}, status_code=422)
    # -- end of the bad-input block -----------------------------------------------------

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

    app.include_router(apidocs_router)
    for router in (items_router, rules_router, queues_router, users_router,
                   *_extra_routers()):
        app.include_router(router, responses=ERROR_RESPONSES)
    return app


def _extra_routers() -> list:
    """Routers of the later domains (ML, crowd, calibration, reports, web), if present."""
    import importlib

    routers = []
    for mod in ("backend.ml_adapter.router", "backend.crowdwork.router",
                "backend.calibration.router", "backend.reports.router", "backend.web.router",
                "backend.web.item_pages", "backend.web.rules_pages", "backend.appeals.router",
                "backend.imports.router", "backend.jobs.router", "backend.deliveries.router",
                "backend.media.router", "backend.hashes.router", "backend.routing.router",
                "backend.web.replay_page"):
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name == mod:
                continue
            raise
        routers.append(module.router)
    return routers
