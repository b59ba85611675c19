"""Users, API tokens (stored as SHA-256), passwords (argon2 via pwdlib), grants, audit;
account management (tokens, deactivation, roles, passwords), each action audited.

The account actions take the ``actor`` (None for the command line, which runs as the
machine's operator) and ``via`` (``api``, ``web``, ``cli``); each writes one audit entry
(``token.create``, ``token.revoke``, ``user.deactivate``, ``user.reactivate``,
``user.role``, ``user.password``, ``user.sessions_end``) in the caller's transaction.
Passwords never appear in the audit log."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from pwdlib import PasswordHash
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, joinedload, selectinload

from backend.db import utcnow
from backend.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from backend.users import sessions as web_sessions
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
    if len(password) > 1024:
        raise ValidationFailed("password must be at most 1024 characters")
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


def cli_actor() -> str:
    """Who ran a command-line action: ``cli:<os user>`` (the audit trail's actor where no
    Quorum user did it)."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "cli:unknown"


def audit(
    *,
    session: Session,
    user: User | None,
    action: str,
    target_type: str | None = None,
    target_id: Any = None,
    details: dict[str, Any] | None = None,
) -> None:
    if user is None and isinstance(details, dict) and details.get("via") in ("cli", "demo") \
            and "actor" not in details:  # who ran the command (the entry has no user)
        details = {**details, "actor": cli_actor()}
    session.add(AuditEntry(
        user_id=user.id if user else None,
        action=action,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        details=details,
    ))


# --- account management ---------------------------------------------------------------------

def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}, not {role!r}")


def _other_active_admins(session: Session, user: User) -> int:
    return int(session.scalar(
        select(func.count()).select_from(User)
        .where(User.role == "admin", User.is_active.is_(True), User.id != user.id)) or 0)


def _keep_an_admin(session: Session, user: User, what: str) -> None:
    if user.role == "admin" and user.is_active and _other_active_admins(session, user) == 0:
        raise Conflict(f"{user.username} is the last active admin: {what} would leave "
                       "nobody able to manage accounts; make another admin first")


def create_token(*, session: Session, user: User, actor: User | None, via: str,
                 name: str = "default") -> tuple[str, ApiToken]:
    """A new API token for ``user`` (the token, shown once, and its row), audited."""
    if not name or len(name) > 100:
        raise ValidationFailed("a token name must be 1 to 100 characters")
    token = issue_token(session=session, user=user, name=name)
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(token))
                          ).one()
    audit(session=session, user=actor, action="token.create", target_type="user",
          target_id=user.username, details={"token_id": row.id, "name": name,
                                            "prefix": row.prefix, "via": via})
    return token, row


def list_tokens(*, session: Session, user: User) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)
                                .order_by(ApiToken.id)))


def revoke_token(*, session: Session, user: User, token_id: int, actor: User | None,
                 via: str, now: datetime) -> ApiToken:
    """Revoke one of ``user``'s tokens; it stops working at once. Revoking a revoked
    token changes nothing (and is not audited again)."""
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != user.id:
        raise NotFound(f"{user.username} has no API token with id {token_id}")
    if token.revoked_at is None:
        token.revoked_at = now
        session.flush()
        audit(session=session, user=actor, action="token.revoke", target_type="user",
              target_id=user.username, details={"token_id": token.id, "prefix": token.prefix,
                                                "via": via})
    return token


def deactivate_user(*, session: Session, user: User, actor: User | None, via: str,
                    now: datetime) -> int:
    """The user can no longer log in or use their tokens; their web sessions end.
    Returns how many sessions were ended."""
    _keep_an_admin(session, user, "deactivating them")
    ended = 0
    if user.is_active:
        user.is_active = False
        ended = web_sessions.end_user_sessions(session=session, user_id=user.id, now=now,
                                               reason="deactivated")
        audit(session=session, user=actor, action="user.deactivate", target_type="user",
              target_id=user.username, details={"sessions_ended": ended, "via": via})
    session.flush()
    return ended


def reactivate_user(*, session: Session, user: User, actor: User | None, via: str) -> None:
    """Let the user log in again (their old sessions stay ended; unrevoked tokens work)."""
    if not user.is_active:
        user.is_active = True
        session.flush()
        audit(session=session, user=actor, action="user.reactivate", target_type="user",
              target_id=user.username, details={"via": via})


def change_role(*, session: Session, user: User, role: str, actor: User | None,
                via: str) -> None:
    _check_role(role)
    if role == user.role:
        return
    if role != "admin":
        _keep_an_admin(session, user, f"making them {role}")
    before, user.role = user.role, role
    session.flush()
    audit(session=session, user=actor, action="user.role", target_type="user",
          target_id=user.username, details={"from": before, "to": role, "via": via})


def change_password(*, session: Session, user: User, password: str, actor: User | None,
                    via: str, now: datetime, reset: bool = False) -> int:
    """Set a new password; every web session of the user ends. Returns how many ended."""
    set_password(session=session, user=user, password=password)
    ended = web_sessions.end_user_sessions(session=session, user_id=user.id, now=now,
                                           reason="password")
    audit(session=session, user=actor, action="user.password", target_type="user",
          target_id=user.username, details={"reset": reset, "sessions_ended": ended,
                                            "via": via})
    return ended


def reset_password(*, session: Session, user: User, actor: User | None, via: str,
                   now: datetime) -> tuple[str, int]:
    """A new random password (to hand over once) and how many web sessions ended."""
    password = secrets.token_urlsafe(12)
    ended = change_password(session=session, user=user, password=password, actor=actor,
                            via=via, now=now, reset=True)
    return password, ended


def end_sessions(*, session: Session, user: User, actor: User | None, via: str,
                 now: datetime) -> int:
    """Log the user out everywhere (their password and tokens are unchanged)."""
    ended = web_sessions.end_user_sessions(session=session, user_id=user.id, now=now,
                                           reason="admin")
    audit(session=session, user=actor, action="user.sessions_end", target_type="user",
          target_id=user.username, details={"sessions_ended": ended, "via": via})
    return ended
