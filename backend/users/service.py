"""Users, API tokens (stored as SHA-256), passwords (argon2 via pwdlib), grants, audit."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from pwdlib import PasswordHash
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, joinedload, selectinload

from backend.db import utcnow
from backend.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from backend.users.models import ROLES, ApiToken, AuditEntry, QueueGrant, User

TOKEN_PREFIX = "qrm_"
_hasher: PasswordHash | None = None


def password_hasher() -> PasswordHash:
    global _hasher
    if _hasher is None:
        _hasher = PasswordHash.recommended()
    return _hasher


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(
    *,
    session: Session,
    username: str,
    role: str,
    password: str | None = None,
    display_name: str | None = None,
    queue_kinds: list[str] | None = None,
) -> User:
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not username or len(username) > 100:
        raise ValidationFailed("username must be 1 to 100 characters")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists")
    if password is not None and len(password) < 8:
        raise ValidationFailed("password must be at least 8 characters")
    user = User(
        username=username,
        role=role,
        display_name=display_name,
        password_hash=password_hasher().hash(password) if password else None,
    )
    session.add(user)
    session.flush()
    for kind in queue_kinds or []:
        session.add(QueueGrant(user_id=user.id, queue_kind=kind))
    session.flush()
    session.refresh(user)
    return user


def get_user(*, session: Session, username: str) -> User:
    user = session.scalar(
        select(User).where(User.username == username).options(selectinload(User.grants))
    )
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def issue_token(*, session: Session, user: User, name: str = "default") -> str:
    """Create a token and return it; only its hash is stored, so it is shown once."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=name, token_hash=hash_token(token),
                         prefix=token[:12]))
    session.flush()
    return token


#: Every API request runs this: the token's user with their queue grants, in one round
#: trip, built once.
_USER_OF_TOKEN = (
    select(User)
    .join(ApiToken, ApiToken.user_id == User.id)
    .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None))
    .options(joinedload(User.grants))
)


def authenticate_token(*, session: Session, token: str, now: datetime | None = None) -> User:
    user = session.execute(_USER_OF_TOKEN, {"token_hash": hash_token(token)}
                           ).unique().scalar_one_or_none()
    if user is None or not user.is_active:
        raise Unauthorized("invalid or revoked API token")
    return user


def authenticate_password(*, session: Session, username: str, password: str) -> User:
    user = session.scalar(
        select(User).where(User.username == username).options(selectinload(User.grants))
    )
    hasher = password_hasher()
    if user is None or not user.password_hash or not user.is_active:
        hasher.hash(password)  # same work either way: no user enumeration by timing
        raise Unauthorized("wrong username or password")
    if not hasher.verify(password, user.password_hash):
        raise Unauthorized("wrong username or password")
    return user


def set_password(*, session: Session, user: User, password: str) -> None:
    if len(password) < 8:
        raise ValidationFailed("password must be at least 8 characters")
    user.password_hash = password_hasher().hash(password)
    session.flush()


def revoke_tokens(*, session: Session, user: User) -> int:
    n = 0
    for tok in user.tokens:
        if tok.revoked_at is None:
            tok.revoked_at = utcnow()
            n += 1
    session.flush()
    return n


def set_grants(*, session: Session, user: User, queue_kinds: list[str]) -> None:
    wanted = set(queue_kinds)
    for grant in list(user.grants):
        if grant.queue_kind not in wanted:
            user.grants.remove(grant)
    have = {g.queue_kind for g in user.grants}
    for kind in sorted(wanted - have):
        user.grants.append(QueueGrant(queue_kind=kind))
    session.flush()


def list_users(*, session: Session) -> list[User]:
    return list(session.scalars(select(User).options(selectinload(User.grants)).order_by(User.id)))


def audit(
    *,
    session: Session,
    user: User | None,
    action: str,
    target_type: str | None = None,
    target_id: Any = None,
    details: dict[str, Any] | None = None,
) -> None:
    session.add(AuditEntry(
        user_id=user.id if user else None,
        action=action,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        details=details,
    ))
