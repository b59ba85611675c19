from __future__ import annotations

from fastapi import APIRouter

from backend.db import utcnow
from backend.deps import AdminUser, CurrentUser, SessionDep, SettingsDep
from backend.rules.service import check_queue_kinds
from backend.users import service
from backend.users.models import ApiToken, User
from backend.users.schemas import (
    GrantsUpdate,
    PasswordReset,
    PasswordUpdate,
    RoleUpdate,
    SessionsEnded,
    TokenCreate,
    TokenCreated,
    TokenRead,
    UserCreate,
    UserCreated,
    UserRead,
)

router = APIRouter(prefix="/api/v1/users", tags=["users"])


def user_read(u: User) -> UserRead:
    return UserRead(id=u.id, username=u.username, display_name=u.display_name, role=u.role,
                    is_active=u.is_active, queue_kinds=sorted(u.granted_kinds),
                    created_at=u.created_at)


@router.get("/me", response_model=UserRead)
def me(user: CurrentUser) -> UserRead:
    return user_read(user)


@router.get("", response_model=list[UserRead])
def list_users(session: SessionDep, admin: AdminUser) -> list[UserRead]:
    return [user_read(u) for u in service.list_users(session=session)]


@router.post("", response_model=UserCreated, status_code=201)
def create_user(data: UserCreate, session: SessionDep, settings: SettingsDep,
                admin: AdminUser) -> UserCreated:
    check_queue_kinds(session=session, settings=settings, kinds=data.queue_kinds)
    user = service.create_user(session=session, username=data.username, role=data.role,
                               password=data.password, display_name=data.display_name,
                               queue_kinds=data.queue_kinds)
    token = service.issue_token(session=session, user=user)
    service.audit(session=session, user=admin, action="users.create", target_type="user",
                  target_id=user.username, details={"role": user.role,
                                                    "queue_kinds": data.queue_kinds})
    return UserCreated(**user_read(user).model_dump(), token=token)


@router.put("/{username}/grants", response_model=UserRead)
def set_grants(username: str, data: GrantsUpdate, session: SessionDep, settings: SettingsDep,
               admin: AdminUser) -> UserRead:
    check_queue_kinds(session=session, settings=settings, kinds=data.queue_kinds)
    user = service.get_user(session=session, username=username)
    service.set_grants(session=session, user=user, queue_kinds=data.queue_kinds)
    service.audit(session=session, user=admin, action="users.grants", target_type="user",
                  target_id=username, details={"queue_kinds": data.queue_kinds})
    return user_read(user)


# --- account management (admins; every action is audited by the service) ----------------

def token_read(t: ApiToken) -> TokenRead:
    return TokenRead(id=t.id, name=t.name, prefix=t.prefix, created_at=t.created_at,
                     last_used_at=t.last_used_at, revoked_at=t.revoked_at)


@router.get("/{username}/tokens", response_model=list[TokenRead])
def list_tokens(username: str, session: SessionDep, admin: AdminUser) -> list[TokenRead]:
    user = service.get_user(session=session, username=username)
    return [token_read(t) for t in service.list_tokens(session=session, user=user)]


@router.post("/{username}/tokens", response_model=TokenCreated, status_code=201)
def create_token(username: str, data: TokenCreate, session: SessionDep,
                 admin: AdminUser) -> TokenCreated:
    user = service.get_user(session=session, username=username)
    token, row = service.create_token(session=session, user=user, actor=admin, via="api",
                                      name=data.name)
    return TokenCreated(**token_read(row).model_dump(), token=token)


@router.post("/{username}/tokens/{token_id}/revoke", response_model=TokenRead)
def revoke_token(username: str, token_id: int, session: SessionDep,
                 admin: AdminUser) -> TokenRead:
    """The token stops working at once (401 on its next request)."""
    user = service.get_user(session=session, username=username)
    return token_read(service.revoke_token(session=session, user=user, token_id=token_id,
                                           actor=admin, via="api", now=utcnow()))


@router.post("/{username}/deactivate", response_model=UserRead)
def deactivate(username: str, session: SessionDep, admin: AdminUser) -> UserRead:
    """The user can no longer log in nor use their tokens; their web sessions end."""
    user = service.get_user(session=session, username=username)
    service.deactivate_user(session=session, user=user, actor=admin, via="api", now=utcnow())
    return user_read(user)


@router.post("/{username}/reactivate", response_model=UserRead)
def reactivate(username: str, session: SessionDep, admin: AdminUser) -> UserRead:
    user = service.get_user(session=session, username=username)
    service.reactivate_user(session=session, user=user, actor=admin, via="api")
    return user_read(user)


@router.put("/{username}/role", response_model=UserRead)
def set_role(username: str, data: RoleUpdate, session: SessionDep,
             admin: AdminUser) -> UserRead:
    user = service.get_user(session=session, username=username)
    service.change_role(session=session, user=user, role=data.role, actor=admin, via="api")
    return user_read(user)


@router.put("/{username}/password", response_model=SessionsEnded)
def set_password(username: str, data: PasswordUpdate, session: SessionDep,
                 admin: AdminUser) -> SessionsEnded:
    """Set the web login password; every web session of the user ends."""
    user = service.get_user(session=session, username=username)
    ended = service.change_password(session=session, user=user, password=data.password,
                                    actor=admin, via="api", now=utcnow())
    return SessionsEnded(sessions_ended=ended)


@router.post("/{username}/password/reset", response_model=PasswordReset)
def reset_password(username: str, session: SessionDep, admin: AdminUser) -> PasswordReset:
    """A new random password, returned once; every web session of the user ends."""
    user = service.get_user(session=session, username=username)
    password, ended = service.reset_password(session=session, user=user, actor=admin,
                                             via="api", now=utcnow())
    return PasswordReset(password=password, sessions_ended=ended)


@router.post("/{username}/sessions/end", response_model=SessionsEnded)
def end_sessions(username: str, session: SessionDep, admin: AdminUser) -> SessionsEnded:
    """Log the user out of the web UI everywhere."""
    user = service.get_user(session=session, username=username)
    return SessionsEnded(sessions_ended=service.end_sessions(
        session=session, user=user, actor=admin, via="api", now=utcnow()))
