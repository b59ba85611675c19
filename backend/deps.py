"""FastAPI dependencies: ``SessionDep``, ``SettingsDep``, ``PolicyDep``, ``CurrentUser``, roles."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from backend.db import get_sessionmaker, transaction
from backend.errors import Forbidden, Unauthorized
from backend.policy import Policy, get_policy
from backend.settings import Settings, get_settings
from backend.users import service as users
from backend.users.models import User


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: commit if the handler returns, roll back if it raises.

    Used with ``scope="function"`` (``SessionDep``): FastAPI leaves the dependency, and so
    commits, once the route has returned and its response is serialised, *before* the
    response is sent. A 2xx therefore means the transaction is durable; a failed commit
    becomes an error response, never a 2xx. (With the default scope FastAPI would commit
    after the response had gone out: a client could read the old state after a 201, and
    a crash in between lost work the client had been told was saved.)
    """
    factory = getattr(request.app.state, "sessionmaker", None) or get_sessionmaker()
    with transaction(factory) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PolicyDep = Annotated[Policy, Depends(get_policy)]


def current_user(request: Request, session: SessionDep) -> User:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return users.authenticate_token(session=session, token=header[7:].strip())
    web_user = getattr(request.state, "web_user_id", None)
    if web_user is not None:
        user = session.get(User, web_user)
        if user is not None and user.is_active:
            return user
    raise Unauthorized("missing API token: send 'Authorization: Bearer <token>'")


CurrentUser = Annotated[User, Depends(current_user)]


def require_role(*roles: str) -> Callable[[User], User]:
    async def check(user: CurrentUser) -> User:  # no I/O: stays on the event loop
        if user.role not in roles:
            raise Forbidden(f"this needs the role {' or '.join(roles)}; you are {user.role}")
        return user

    return check


AnalystUser = Annotated[User, Depends(require_role("analyst", "admin"))]
AdminUser = Annotated[User, Depends(require_role("admin"))]
ModeratorUser = Annotated[User, Depends(require_role("moderator", "admin"))]
