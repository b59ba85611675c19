"""FastAPI dependencies: ``SessionDep``, ``SettingsDep``, ``PolicyDep``, ``CurrentUser``, roles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from backend.db import get_sessionmaker, transaction
from backend.errors import Forbidden, Unauthorized
from backend.policy import Policy, get_policy
from backend.settings import Settings, get_settings
from backend.users import service as users
from backend.users.models import User


def _sessionmaker(request: Request) -> sessionmaker[Session]:
    """The app's session factory (tests set one on ``app.state``), else the settings'."""
    return getattr(request.app.state, "sessionmaker", None) or get_sessionmaker()


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: commit if the handler returns, roll back if it raises.

    Used with ``scope="function"`` (``SessionDep``): FastAPI leaves the dependency, and so
    commits, once the route has returned and its response is serialised, *before* the
    response is sent. A 2xx therefore means the transaction is durable; a failed commit
    becomes an error response, never a 2xx. (With the default scope FastAPI would commit
    after the response had gone out: a client could read the old state after a 201, and
    a crash in between lost work the client had been told was saved.)
    """
    with transaction(_sessionmaker(request)) as session:
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

T = TypeVar("T")


def _check_role(user: User, roles: Collection[str]) -> User:
    if user.role not in roles:
        raise Forbidden(f"this needs the role {' or '.join(roles)}; you are {user.role}")
    return user


@dataclass
class HotTxn:
    """The session and caller of a hot route; ``run`` does its work and commits."""

    session: Session
    user: User

    async def run(self, work: Callable[[Session, User], T]) -> T:
        def in_thread() -> T:
            result = work(self.session, self.user)
            self.session.commit()  # before the route returns: a 2xx means committed
            return result

        return await run_in_threadpool(in_thread)


def hot_transaction(*roles: str) -> Callable[[Request], AsyncIterator[HotTxn]]:
    """``SessionDep`` + ``CurrentUser`` + a role in **two** thread-pool hops instead of five,
    for the hottest routes (lease, verdict).

    A sync dependency or route costs a hop each (session enter and exit, the user, the
    route: ~0.19 ms of CPU apiece on these machines, and the event loop's turn around
    each); here the user is looked up in one hop and the route's ``HotTxn.run`` does its
    work and commits in the other. As with ``SessionDep``, authentication runs before the
    body is validated (a caller without a token gets 401, not 422), the commit happens
    before the response is sent, and an error rolls back and becomes its error response.
    """
    def auth(request: Request, session: Session) -> User:
        return _check_role(current_user(request, session), roles)

    def rollback(session: Session) -> None:
        try:
            session.rollback()
        finally:
            session.close()

    async def dep(request: Request) -> AsyncIterator[HotTxn]:
        session = _sessionmaker(request)()
        committed = False
        try:
            txn = HotTxn(session, await run_in_threadpool(auth, request, session))
            yield txn
            committed = not session.in_transaction()
        finally:
            if committed:
                session.close()  # no connection held after the commit: no I/O, no hop
            else:
                await run_in_threadpool(rollback, session)

    return dep


def require_role(*roles: str) -> Callable[[User], User]:
    async def check(user: CurrentUser) -> User:  # no I/O: stays on the event loop
        return _check_role(user, roles)

    return check


AnalystUser = Annotated[User, Depends(require_role("analyst", "admin"))]
AdminUser = Annotated[User, Depends(require_role("admin"))]
ModeratorUser = Annotated[User, Depends(require_role("moderator", "admin"))]
ModeratorTxn = Annotated[HotTxn, Depends(hot_transaction("moderator", "admin"), scope="function")]
