from __future__ import annotations

from fastapi import APIRouter

from backend.deps import AdminUser, CurrentUser, SessionDep, SettingsDep
from backend.rules.service import check_queue_kinds
from backend.users import service
from backend.users.models import User
from backend.users.schemas import GrantsUpdate, UserCreate, UserCreated, UserRead

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
