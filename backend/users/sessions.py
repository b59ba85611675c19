"""Server-side web sessions: started at login, looked up on every page, ended by logout,
a password change, deactivation or an admin. Only the SHA-256 of a session's random id is
stored (the cookie holds the id, signed: ``backend.web.security``)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, joinedload

from backend.users.models import User, WebSession

#: How long an ended or expired session stays in the table (who logged in from where).
KEEP_ENDED = timedelta(days=30)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(*, session: Session, user: User, now: datetime, max_age_s: int,
                  client_address: str | None = None) -> tuple[str, WebSession]:
    """A new session for ``user``; returns its random id (for the cookie) and the row.
    The user's sessions that ended or expired more than ``KEEP_ENDED`` ago are deleted."""
    session.execute(
        delete(WebSession)
        .where(WebSession.user_id == user.id,
               or_(WebSession.expires_at < now - KEEP_ENDED,
                   WebSession.ended_at < now - KEEP_ENDED)))
    token = secrets.token_urlsafe(32)
    row = WebSession(user_id=user.id, token_hash=_hash(token), csrf_token=secrets.token_urlsafe(24),
                     created_at=now, expires_at=now + timedelta(seconds=max_age_s),
                     client_address=(client_address or "")[:64] or None)
    session.add(row)
    session.flush()
    return token, row


def live_session(*, session: Session, token: str, now: datetime
                 ) -> tuple[WebSession, User] | None:
    """The session named by ``token`` and its user, if it has not ended or expired and
    the user is active; None otherwise."""
    row = session.scalars(
        select(WebSession).where(WebSession.token_hash == _hash(token))
    ).one_or_none()
    if row is None or row.ended_at is not None or row.expires_at <= now:
        return None
    user = session.scalars(select(User).where(User.id == row.user_id)
                           .options(joinedload(User.grants))).unique().one_or_none()
    if user is None or not user.is_active:
        return None
    return row, user


def end_session(*, session: Session, web_session: WebSession, now: datetime,
                reason: str) -> None:
    if web_session.ended_at is None:
        web_session.ended_at = now
        web_session.ended_reason = reason
        session.flush()


def end_user_sessions(*, session: Session, user_id: int, now: datetime, reason: str) -> int:
    """End every live session of a user; returns how many were ended."""
    result = session.execute(
        update(WebSession)
        .where(WebSession.user_id == user_id, WebSession.ended_at.is_(None),
               WebSession.expires_at > now)
        .values(ended_at=now, ended_reason=reason)
        .execution_options(synchronize_session="fetch"))
    session.flush()
    return int(result.rowcount or 0)
