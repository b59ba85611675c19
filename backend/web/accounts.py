"""The admin's account page (``/admin/users``): roles, activation, passwords, API tokens,
sessions and queue grants. Every action goes through ``backend.users.service``, which
writes the audit entry; a one-time secret (a new token or password) is shown once on
the page that answers the POST and never stored in clear."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from backend.db import utcnow
from backend.deps import SessionDep
from backend.errors import NotFound
from backend.users import service as users
from backend.users.models import ROLES, User
from backend.web.router import PostUser, WebRoute, WebUser, _admin, render

router = APIRouter(include_in_schema=False, route_class=WebRoute)


def _target(session: Session, user_id: int) -> User:
    target = session.get(User, user_id)
    if target is None:
        raise NotFound(f"no user with id {user_id}")
    return target


def _page(request: Request, session: Session, *, notice: str | None = None,
          secret: str | None = None, secret_what: str | None = None) -> HTMLResponse:
    rows = users.list_users(session=session)
    tokens = {u.id: users.list_tokens(session=session, user=u) for u in rows}
    resp = render(request, "users.html", users=rows, tokens=tokens, notice=notice,
                  secret=secret, secret_what=secret_what, roles=ROLES,
                  known_kinds=known_kinds(session))
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _done(notice: str) -> RedirectResponse:
    return RedirectResponse(f"/admin/users?notice={quote(notice)}", status_code=303)


@router.get("/admin/users")
def users_page(request: Request, session: SessionDep, user: WebUser) -> HTMLResponse:
    _admin(user)
    return _page(request, session, notice=request.query_params.get("notice"))


def known_kinds(session: Session) -> list[str]:
    """Queue kinds a grant may name: those Quorum routes to or has queues of, and APPEALS."""
    from backend.appeals.service import APPEALS_KIND
    from backend.rules.service import known_queue_kinds
    from backend.settings import get_settings

    return sorted(known_queue_kinds(session=session, settings=get_settings()) | {APPEALS_KIND})


@router.post("/admin/users/{user_id}/grants", response_model=None)
def user_grants(user_id: int, request: Request, session: SessionDep, user: PostUser,
                kinds: Annotated[str, Form(max_length=2000)] = "",
                confirm: Annotated[str, Form(max_length=10)] = ""
                ) -> HTMLResponse | RedirectResponse:
    """Set a user's queue kinds: each must be a known kind (or ``*``); the first POST shows
    what is added and taken away and asks for confirmation, the second saves (audited)."""
    from backend.errors import ValidationFailed
    from backend.users.schemas import checked_grants

    _admin(user)
    target = _target(session, user_id)
    wanted = checked_grants(sorted({k.strip().upper() if k.strip() != "*" else "*"
                                    for k in kinds.replace(",", " ").split() if k.strip()}))
    known = known_kinds(session)
    unknown = [k for k in wanted if k != "*" and k not in known]
    if unknown:
        raise ValidationFailed(
            f"{target.username}'s grants were not changed: {', '.join(unknown)} "
            f"{'is not a known queue kind' if len(unknown) == 1 else 'are not known queue kinds'}"
            f"; known kinds are {', '.join(known)} (or * for every kind)")
    before = sorted(target.granted_kinds)
    if wanted == before:
        return _done(f"{target.username}'s grants are unchanged.")
    if confirm != "yes":
        return render(request, "grants_confirm.html", target=target, before=before,
                      wanted=wanted, added=[k for k in wanted if k not in before],
                      removed=[k for k in before if k not in wanted],
                      kinds=" ".join(wanted))
    users.set_grants(session=session, user=target, queue_kinds=wanted)
    users.audit(session=session, user=user, action="user.grants", target_type="user",
                target_id=target.id, details={"from": before, "to": wanted, "via": "web"})
    return _done(f"{target.username} may now work: {', '.join(wanted) or 'no queue'}.")


@router.post("/admin/users/{user_id}/role")
def user_role(user_id: int, session: SessionDep, user: PostUser,
              role: Annotated[str, Form()]) -> RedirectResponse:
    _admin(user)
    target = _target(session, user_id)
    users.change_role(session=session, user=target, role=role, actor=user, via="web")
    return _done(f"{target.username} is now {target.role}.")


@router.post("/admin/users/{user_id}/active")
def user_active(user_id: int, session: SessionDep, user: PostUser,
                active: Annotated[bool, Form()]) -> RedirectResponse:
    _admin(user)
    target = _target(session, user_id)
    if active:
        users.reactivate_user(session=session, user=target, actor=user, via="web")
        return _done(f"{target.username} may log in again.")
    ended = users.deactivate_user(session=session, user=target, actor=user, via="web",
                                  now=utcnow())
    return _done(f"{target.username} is deactivated; {ended} web session(s) ended.")


@router.post("/admin/users/{user_id}/password")
def user_password(user_id: int, request: Request, session: SessionDep, user: PostUser,
                  password: Annotated[str, Form()] = "",
                  generate: Annotated[bool, Form()] = False) -> Response:
    _admin(user)
    target = _target(session, user_id)
    if generate:
        new, _ = users.reset_password(session=session, user=target, actor=user, via="web",
                                   now=utcnow())
        return _page(request, session, secret=new,
                     secret_what=f"New password of {target.username} (shown once; their "
                                 "web sessions ended)")
    ended = users.change_password(session=session, user=target, password=password,
                                  actor=user, via="web", now=utcnow())
    return _done(f"Password of {target.username} changed; {ended} web session(s) ended.")


@router.post("/admin/users/{user_id}/sessions/end")
def user_sessions_end(user_id: int, session: SessionDep, user: PostUser) -> RedirectResponse:
    _admin(user)
    target = _target(session, user_id)
    ended = users.end_sessions(session=session, user=target, actor=user, via="web",
                               now=utcnow())
    return _done(f"{ended} web session(s) of {target.username} ended.")


@router.post("/admin/users/{user_id}/tokens")
def user_token_new(user_id: int, request: Request, session: SessionDep, user: PostUser,
                   name: Annotated[str, Form()] = "default") -> HTMLResponse:
    _admin(user)
    target = _target(session, user_id)
    token, _ = users.create_token(session=session, user=target, actor=user, via="web",
                               name=name.strip() or "default")
    return _page(request, session, secret=token,
                 secret_what=f"New API token of {target.username} (shown once)")


@router.post("/admin/users/{user_id}/tokens/{token_id}/revoke")
def user_token_revoke(user_id: int, token_id: int, session: SessionDep,
                      user: PostUser) -> RedirectResponse:
    _admin(user)
    target = _target(session, user_id)
    tok = users.revoke_token(session=session, user=target, token_id=token_id, actor=user,
                             via="web", now=utcnow())
    return _done(f"Token {tok.prefix}… of {target.username} is revoked.")
