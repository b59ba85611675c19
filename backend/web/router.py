"""The web UI: server-rendered pages for moderators, analysts and admins.

GET requests never change state. Every POST carries the session's CSRF token (form
field ``csrf`` or header ``X-CSRF-Token``). Domain errors become an HTML error page
(or JSON for the work view's ``fetch`` calls) through ``WebRoute``.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from backend.db import utcnow
from backend.decisions import undo
from backend.deps import PolicyDep, SessionDep, SettingsDep
from backend.errors import (
    Conflict,
    Forbidden,
    NotFound,
    QuorumError,
    Unauthorized,
    ValidationFailed,
)
from backend.items.models import Item
from backend.queues import service as queues
from backend.queues import work
from backend.queues.models import Task
from backend.users import service as users
from backend.users import sessions as web_sessions
from backend.users.models import User
from backend.users.ratelimit import LoginLimiter
from backend.users.settings import get_login_settings
from backend.web import audit, lease, queue_view, security
from backend.web import service as web

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")


class LoginRequired(Exception):
    pass


class CsrfRefused(Exception):
    pass


def _wants_json(request: Request) -> bool:
    return request.headers.get("x-requested-with") == "fetch"


def error_page(request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": status, "message": message}, status_code=status)
    return templates.TemplateResponse(
        request, "error.html",
        {"status": status, "message": message, "user": getattr(request.state, "web_user", None),
         "csrf": _csrf_of(request)}, status_code=status)


class WebRoute(APIRoute):
    """Maps domain errors to pages, a missing login to a redirect; rolls back on error."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                if _wants_json(request):
                    return JSONResponse({"error": 401, "message": "log in again"},
                                        status_code=401)
                target = quote(request.url.path, safe="/")
                return RedirectResponse(f"/login?next={target}", status_code=303)
            except CsrfRefused:
                _rollback(request)
                return error_page(request, 403, "The form's security token is missing or "
                                  "out of date. Reload the page and try again.")
            except QuorumError as exc:
                _rollback(request)
                return error_page(request, exc.status, exc.message)
            except RequestValidationError as exc:
                _rollback(request)
                fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) for e in exc.errors())
                return error_page(request, 422, f"The form is incomplete or invalid: {fields}")

        return route


def _rollback(request: Request) -> None:
    db = getattr(request.state, "web_db", None)
    if db is not None:
        db.rollback()


router = APIRouter(include_in_schema=False, route_class=WebRoute)

#: The work view shows item cards; pair tasks ("same decision?") are answered through the
#: API (``POST /api/v1/tasks/{id}/verdict`` with ``same`` / ``different``) or by the crowd.
WEB_TASK_TYPES = ("item",)


# --- session, user, CSRF ------------------------------------------------------------------

def _csrf_of(request: Request) -> str | None:
    sess = getattr(request.state, "web_session", None)
    return sess.csrf_token if sess else None


def _signing_key(request: Request, settings: SettingsDep) -> str:
    """The cookie signing key, worked out once per app (it may be read from a file)."""
    key = getattr(request.app.state, "web_signing_key", None)
    if key is None:
        key = request.app.state.web_signing_key = security.signing_key(settings)
    return key


def _login_limiter(request: Request) -> LoginLimiter:
    limiter = getattr(request.app.state, "login_limiter", None)
    if limiter is None:
        factory = request.app.state.sessionmaker
        limiter = request.app.state.login_limiter = LoginLimiter(
            get_login_settings(), factory.kw["bind"])
    return limiter


def _client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def web_user(request: Request, session: SessionDep, settings: SettingsDep) -> User:
    """The user of a live server-side session (the cookie's signed id); else log in."""
    request.state.web_db = session
    token = security.unsign_session_token(_signing_key(request, settings),
                                          request.cookies.get(security.SESSION_COOKIE))
    found = web_sessions.live_session(session=session, token=token, now=utcnow()) \
        if token else None
    if found is None:
        raise LoginRequired()
    sess, user = found
    request.state.web_user_id = user.id
    request.state.web_user = user
    request.state.web_session = sess
    return user


WebUser = Annotated[User, Depends(web_user)]


async def csrf_checked(request: Request, user: WebUser) -> User:
    token = request.headers.get("x-csrf-token")
    if token is None:
        form = await request.form()
        value = form.get("csrf")
        token = value if isinstance(value, str) else None
    if not security.tokens_match(_csrf_of(request), token):
        raise CsrfRefused()
    return user


PostUser = Annotated[User, Depends(csrf_checked)]


def _analyst(user: User) -> User:
    if user.role not in ("analyst", "admin"):
        raise Forbidden("this page is for analysts and admins")
    return user


def _admin(user: User) -> User:
    if user.role != "admin":
        raise Forbidden("this page is for admins")
    return user


def render(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    ctx.setdefault("user", getattr(request.state, "web_user", None))
    ctx.setdefault("csrf", _csrf_of(request))
    return templates.TemplateResponse(request, name, ctx, status_code=status_code)


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/queues"


# --- login / logout -------------------------------------------------------------------------

def _login_form(request: Request, *, message: str | None = None, status_code: int = 200,
                next_: str = "/queues", username: str = "",
                headers: dict[str, str] | None = None) -> HTMLResponse:
    from backend.settings import get_settings

    token = secrets.token_urlsafe(24)
    resp = render(request, "login.html", status_code=status_code, login_csrf=token,
                  message=message, next=next_, username=username)
    resp.set_cookie(security.LOGIN_CSRF_COOKIE, token, httponly=True, samesite="lax",
                    secure=security.cookie_secure(get_settings(), request.url.scheme),
                    path="/login", max_age=3600)
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/queues", status_code=303)


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return _login_form(request, next_=_safe_next(next))


@router.post("/login")
def login(request: Request, session: SessionDep, settings: SettingsDep,
          username: Annotated[str, Form()] = "", password: Annotated[str, Form()] = "",
          csrf: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/queues"
          ) -> Response:
    target = _safe_next(next)
    if not security.tokens_match(request.cookies.get(security.LOGIN_CSRF_COOKIE), csrf):
        return _login_form(request, message="The login form expired; please try again.",
                           status_code=403, next_=target, username=username)
    name, address = username.strip(), _client_address(request)
    limiter = _login_limiter(request)
    refusal = limiter.check(username=name, address=address)
    if refusal is not None:  # decided before the password is even looked at
        return _login_form(request, message=refusal.message, status_code=429,
                           next_=target, username=username,
                           headers={"Retry-After": str(refusal.retry_after_s)})
    try:
        user = users.authenticate_password(session=session, username=name, password=password)
    except Unauthorized:
        # End this request's read-only transaction before counting: the counter is written
        # on its own connection and committed at once (SQLite has one writer at a time).
        session.rollback()
        limiter.failed(username=name, address=address)
        return _login_form(request, message="Wrong username or password.", status_code=401,
                           next_=target, username=username)
    now = utcnow()
    token, _ = web_sessions.start_session(session=session, user=user, now=now,
                                          max_age_s=security.SESSION_MAX_AGE,
                                          client_address=address)
    users.audit(session=session, user=user, action="web.login", target_type="user",
                target_id=user.id)
    resp = RedirectResponse(target, status_code=303)
    resp.set_cookie(security.SESSION_COOKIE,
                    security.sign_session_token(_signing_key(request, settings), token),
                    httponly=True, samesite="lax",
                    secure=security.cookie_secure(settings, request.url.scheme),
                    max_age=security.SESSION_MAX_AGE, path="/")
    resp.delete_cookie(security.LOGIN_CSRF_COOKIE, path="/login")
    return resp


@router.post("/logout")
def logout(request: Request, session: SessionDep, user: PostUser) -> RedirectResponse:
    """End the session on the server (a copy of the cookie stops working too)."""
    web_sessions.end_session(session=session, web_session=request.state.web_session,
                             now=utcnow(), reason="logout")
    users.audit(session=session, user=user, action="web.logout", target_type="user",
                target_id=user.id)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(security.SESSION_COOKIE, path="/")
    return resp


# --- static files and item images -------------------------------------------------------

@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    path = (STATIC / name).resolve()
    if path.parent != STATIC or not path.is_file():
        raise NotFound(f"no static file {name!r}")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


@router.get("/items/{item_id}/image")
def item_image(item_id: int, session: SessionDep, settings: SettingsDep,
               user: WebUser) -> Response:
    """The item's photo, always from Quorum: a file under the data directory, or a
    remote image fetched by Quorum (allow-listed hosts, size and time limits, checked
    to be an image: ``backend.media.fetch``), so a moderator's browser never contacts
    the URL an item carries."""
    item = session.get(Item, item_id)
    if item is None:
        raise NotFound(f"no item with id {item_id}")
    headers = {"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"}
    if (item.image or "").startswith(("http://", "https://")):
        from backend.media.fetch import fetch_image
        from backend.media.settings import get_image_proxy_settings

        image = fetch_image(item.image or "", policy=get_image_proxy_settings().policy())
        return Response(image.content, media_type=image.content_type,
                        headers={**headers, "Content-Security-Policy": "default-src 'none'"})
    path, media = web.local_image(item=item, settings=settings)
    return FileResponse(path, media_type=media, headers=headers)


# --- queues -----------------------------------------------------------------------------------

@router.get("/queues")
def queues_page(request: Request, session: SessionDep, settings: SettingsDep,
                user: WebUser) -> HTMLResponse:
    now = utcnow()
    rows = web.today_queues(session=session, user=user, settings=settings, now=now)
    stats = web.moderator_stats(session=session, user=user, now=now, settings=settings)
    capacity = None
    if settings.moderator_daily_capacity > 0:
        from backend.queues.overflow import capacity as moderator_capacity

        capacity = moderator_capacity(session=session, settings=settings, now=now)
    return render(request, "queues.html", rows=rows, stats=stats, capacity=capacity,
                  day=queues.queue_day(now, settings), notice=request.query_params.get("notice"))


@router.get("/queues/{name}")
def queue_page(name: str, request: Request, session: SessionDep, policy: PolicyDep,
               user: WebUser, q: Annotated[str, Query(max_length=200)] = "",
               state: Annotated[str, Query(max_length=10)] = "",
               after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
               limit: Annotated[int, Query(ge=1, le=queue_view.PAGE_MAX)] = 50
               ) -> HTMLResponse:
    """A queue: progress, its items (search, state filter, paged; read-only for analysts
    without a grant) and, for those who may work it, near-duplicate clusters."""
    queue = queue_view.viewable_queue(session=session, user=user, name=name)
    may_work = user.may_work(queue.kind)
    row = queues.queue_row(session=session, queue=queue)
    clusters = web.near_duplicate_clusters(session=session, queue=queue, user=user) \
        if queue.audience == "moderators" and may_work else []
    contents = queue_view.queue_contents(session=session, queue=queue, q=q, state=state,
                                         after=after, limit=limit)
    base = {k: v for k, v in {"q": q, "state": state, "limit": limit}.items() if v}
    more = (f"/queues/{quote(queue.name)}?{urlencode({**base, 'after': contents.next_after})}"
            if contents.next_after else None)
    decided = _decided_notice(request, policy)
    return render(request, "queue.html", row=row, clusters=clusters, may_work=may_work,
                  decided=decided,
                  policy_labels=policy.labels, contents=contents, search=q, state=state,
                  states=queue_view.STATES, more=more)


def _decided_notice(request: Request, policy: Any) -> dict[str, Any] | None:
    """The confirmation after a cluster decision: how many, which label, time per item, and
    the events an Undo would take back (from the redirect's query string)."""
    qp = request.query_params
    try:
        count = int(qp.get("decided", ""))
    except ValueError:
        return None
    label = qp.get("label", "")
    titles = {lab.key: lab.title for lab in policy.labels}
    ms = qp.get("ms")
    undo_ids = qp.get("undo", "")
    return {"count": count, "label_title": titles.get(label, label),
            "seconds": int(ms) / 1000 if ms and ms.isdigit() else None,
            "undo": undo_ids if all(p.isdigit() for p in undo_ids.split(",") if p) else ""}


@router.post("/work/start")
def start(session: SessionDep, settings: SettingsDep, user: PostUser,
          queue: Annotated[str, Form()] = "") -> RedirectResponse:
    queues.relax_commit_flush(session)  # a lease-only transaction (see its docstring)
    q = web.workable_queue(session=session, user=user, name=queue) if queue else None
    task = queues.lease_next(session=session, user=user, now=utcnow(), settings=settings,
                             queue=q, task_types=WEB_TASK_TYPES)
    if task is None:
        notice = "nogrants" if _no_grants(user) else "empty"
        return RedirectResponse(f"/queues?notice={notice}", status_code=303)
    suffix = f"?queue={quote(q.name)}" if q else ""
    return RedirectResponse(f"/work/{task.id}{suffix}", status_code=303)


# --- the work view ----------------------------------------------------------------------------

def _no_grants(user: User) -> bool:
    """A user who may work no queue at all (told so, not "nothing left")."""
    return user.role != "admin" and not user.granted_kinds


def _card_html(request: Request, card: web.WorkCard | None, policy: Any,
               user: User | None = None) -> str:
    tpl = templates.get_template("_card.html")
    return tpl.render(request=request, card=card, policy=policy,
                      no_grants=user is not None and _no_grants(user),
                      analyst=user is not None and user.role == "analyst")


@router.get("/work/{task_id}")
def work_page(task_id: int, request: Request, session: SessionDep, settings: SettingsDep,
              policy: PolicyDep, user: WebUser, queue: str | None = None) -> HTMLResponse:
    now = utcnow()
    if queue:
        web.workable_queue(session=session, user=user, name=queue)
    task = web.held_task(session=session, task_id=task_id, user=user, now=now)
    card = web.work_card(session=session, task=task)
    stats = web.moderator_stats(session=session, user=user, now=now, settings=settings)
    return render(request, "work.html", card=card, policy=policy, scope=queue or "",
                  stats=stats, card_html=_card_html(request, card, policy, user),
                  lease_left_s=_left(task.lease_expires_at, now),
                  lease_seconds=settings.lease_seconds)


def _next_card(request: Request, session: SessionDep, settings: SettingsDep, policy: Any,
               user: User, scope: str) -> Response:
    """Lease the next task; the card as JSON for ``fetch``, else a redirect to its page."""
    now = utcnow()
    q = web.workable_queue(session=session, user=user, name=scope) if scope else None
    task = queues.lease_next(session=session, user=user, now=now, settings=settings, queue=q,
                             task_types=WEB_TASK_TYPES)
    if not _wants_json(request):  # a plain form post (no JavaScript)
        if task is None:
            notice = "nogrants" if _no_grants(user) else "empty"
            return RedirectResponse(f"/queues?notice={notice}", status_code=303)
        suffix = f"?queue={quote(scope)}" if scope else ""
        return RedirectResponse(f"/work/{task.id}{suffix}", status_code=303)
    return _card_json(request, session, settings, policy, user, task, now)


def _card_json(request: Request, session: Any, settings: Any, policy: Any, user: User,
               task: Task | None, now: datetime, **extra: Any) -> JSONResponse:
    """The work view's answer: the card of ``task`` (or the empty card), today's count and
    the lease by the server's clock."""
    card = web.work_card(session=session, task=task) if task else None
    stats = web.moderator_stats(session=session, user=user, now=now, settings=settings)
    return JSONResponse({"task_id": task.id if task else None,
                         "html": _card_html(request, card, policy, user),
                         "items_today": stats.items_today,
                         "lease_expires_at": _iso(task.lease_expires_at) if task else None,
                         "lease_left_s": _left(task.lease_expires_at, now) if task else None,
                         "lease_seconds": settings.lease_seconds, **extra})


def _left(deadline: datetime | None, now: datetime) -> float | None:
    """Seconds until ``deadline`` by the server's clock (the browser's may be off)."""
    if deadline is None:
        return None
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=UTC)
    return round(max(0.0, (deadline - now).total_seconds()), 1)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


@router.post("/work/{task_id}/renew")
def renew(task_id: int, session: SessionDep, settings: SettingsDep,
          user: PostUser) -> JSONResponse:
    """Extend my lease on the task I am looking at (the work view calls this on activity);
    409 with a sentence when the lease is gone."""
    now = utcnow()
    queues.relax_commit_flush(session)  # a lease-only transaction (see its docstring)
    deadline = lease.renew_lease(session=session, task_id=task_id, user=user, now=now,
                                 settings=settings)
    return JSONResponse({"task_id": task_id, "lease_expires_at": _iso(deadline),
                         "lease_left_s": _left(deadline, now),
                         "lease_seconds": settings.lease_seconds})


@router.post("/work/next")
def next_card(request: Request, session: SessionDep, settings: SettingsDep,
              policy: PolicyDep, user: PostUser, scope: Annotated[str, Form()] = ""
              ) -> Response:
    """The next card (after a lost lease the work view moves on instead of a dead end)."""
    queues.relax_commit_flush(session)  # a lease-only transaction (see its docstring)
    return _next_card(request, session, settings, policy, user, scope)


@router.post("/work/{task_id}/verdict")
def verdict(task_id: int, request: Request, session: SessionDep, settings: SettingsDep,
            policy: PolicyDep, user: PostUser, label: Annotated[str, Form()],
            comment: Annotated[str, Form()] = "",
            time_spent_ms: Annotated[int | None, Form()] = None,
            scope: Annotated[str, Form()] = "") -> Response:
    task = queues.get_task(session=session, task_id=task_id)
    if not user.may_work(task.queue.kind):
        raise Forbidden(f"you may not work the queue {task.queue.name}")
    if time_spent_ms is not None:
        time_spent_ms = max(0, min(time_spent_ms, 24 * 3600 * 1000))
    work.submit_verdict(session=session, task_id=task_id, user=user, label=label, policy=policy,
                        now=utcnow(), comment=comment.strip() or None,
                        time_spent_ms=time_spent_ms)
    return _next_card(request, session, settings, policy, user, scope)


@router.post("/work/{task_id}/skip")
def skip(task_id: int, request: Request, session: SessionDep, settings: SettingsDep,
         policy: PolicyDep, user: PostUser, scope: Annotated[str, Form()] = "") -> Response:
    task = queues.get_task(session=session, task_id=task_id)
    queues.release(session=session, task=task, user=user, now=utcnow(), skip=True)
    return _next_card(request, session, settings, policy, user, scope)


@router.get("/stats")
def stats_page(request: Request, session: SessionDep, settings: SettingsDep,
               user: WebUser) -> HTMLResponse:
    stats = web.moderator_stats(session=session, user=user, now=utcnow(), settings=settings)
    return render(request, "stats.html", stats=stats)


# --- cluster review ---------------------------------------------------------------------------

@router.post("/queues/{name}/clusters/decide")
def decide_cluster(name: str, session: SessionDep, settings: SettingsDep, policy: PolicyDep,
                   user: PostUser, label: Annotated[str, Form()],
                   task_ids: Annotated[list[int], Form(max_length=undo.MAX_AT_ONCE)] = [],  # noqa: B006
                   comment: Annotated[str, Form(max_length=2000)] = "",
                   time_spent_ms: Annotated[int | None, Form(ge=0, le=24 * 3600 * 1000)] = None
                   ) -> RedirectResponse:
    """Decide the ticked items of a cluster with one label; the time from the first tick to
    the decision is shared out as each item's time. Nothing ticked: told so, not a 422."""
    queue = web.workable_queue(session=session, user=user, name=name)
    policy.check(label)
    if not task_ids:
        return RedirectResponse(f"/queues/{quote(name)}?notice=none-ticked", status_code=303)
    now = utcnow()
    tasks = web.lease_tasks(session=session, task_ids=task_ids, queue=queue, user=user, now=now,
                            settings=settings)
    per_item = time_spent_ms // len(tasks) if time_spent_ms is not None and tasks else None
    events = []
    for task in tasks:
        result = work.submit_verdict(session=session, task_id=task.id, user=user, label=label,
                                     policy=policy, now=now, comment=comment.strip() or None,
                                     time_spent_ms=per_item)
        events.append(result.event_id)
    users.audit(session=session, user=user, action="cluster.decide", target_type="queue",
                target_id=queue.name, details={"label": label, "tasks": len(tasks)})
    query = {"decided": len(tasks), "label": label,
             "undo": ",".join(str(e) for e in events if e is not None)}
    if per_item is not None:
        query["ms"] = per_item
    return RedirectResponse(f"/queues/{quote(name)}?{urlencode(query)}", status_code=303)


@router.post("/queues/{name}/clusters/undo")
def undo_cluster(name: str, session: SessionDep, user: PostUser,
                 events: Annotated[str, Form(max_length=20 * undo.MAX_AT_ONCE)]
                 ) -> RedirectResponse:
    """Undo a cluster decision just made: each verdict gets a superseding undo event and its
    item goes back to the queue."""
    queue = web.workable_queue(session=session, user=user, name=name)
    try:
        ids = [int(x) for x in events.split(",") if x.strip()]
    except ValueError:
        raise ValidationFailed("events must be decision ids separated by commas") from None
    done = undo.undo_verdicts(session=session, user=user, event_ids=ids, now=utcnow())
    users.audit(session=session, user=user, action="cluster.undo", target_type="queue",
                target_id=queue.name, details={"events": len(done)})
    return RedirectResponse(f"/queues/{quote(name)}?undone={len(done)}", status_code=303)


@router.post("/work/undo")
def undo_last(request: Request, session: SessionDep, settings: SettingsDep,
              policy: PolicyDep, user: PostUser,
              current: Annotated[int | None, Form(ge=1, le=2**63 - 1)] = None,
              scope: Annotated[str, Form(max_length=200)] = "") -> Response:
    """Undo my last verdict (within the undo window, while it still stands): its item comes
    back to me on a fresh lease and the card I was shown instead goes back to its queue."""
    now = utcnow()
    ev = undo.last_undoable(session=session, user=user, now=now)
    if ev is None:
        raise Conflict("nothing to undo: your last verdict was decided again since, or is "
                       f"older than {int(undo.UNDO_WINDOW.total_seconds() // 60)} minutes")
    if current is not None:
        held = session.get(Task, current)
        if held is not None and held.state == "leased" and held.lease_owner_id == user.id:
            queues.release(session=session, task=held, user=user, now=now, skip=False)
    [done] = undo.undo_verdicts(session=session, user=user, event_ids=[ev.id], now=now,
                                relet_to=user, lease_seconds=settings.lease_seconds)
    task = session.get(Task, done.task_id) if done.task_id else None
    if task is not None:
        session.refresh(task)
    if not _wants_json(request):
        suffix = f"?queue={quote(scope)}" if scope else ""
        return RedirectResponse(f"/work/{task.id}{suffix}" if task else "/queues",
                                status_code=303)
    return _card_json(request, session, settings, policy, user, task, now,
                      undone_label=done.label)


# --- analysts and admins ----------------------------------------------------------------------

# The rules pages (list, a rule's page, its life cycle): ``backend/web/rules_pages.py``.


@router.get("/admin/audit")
def audit_page(request: Request, session: SessionDep, user: WebUser,
               action: Annotated[str, Query(max_length=100)] = "",
               who: Annotated[str, Query(max_length=100)] = "",
               target_type: Annotated[str, Query(max_length=50)] = "",
               target_id: Annotated[str, Query(max_length=100)] = "",
               since: date | None = None, until: date | None = None,
               before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
               limit: Annotated[int, Query(ge=1, le=audit.PAGE_MAX)] = 100) -> HTMLResponse:
    """The audit trail, newest first: filter by action prefix, person, target and dates;
    page with "Older entries" (keyset on the id)."""
    _analyst(user)
    filters = audit.AuditFilter(
        action=action.strip(), who=who.strip(), target_type=target_type.strip(),
        target_id=target_id.strip(),
        since=datetime.combine(since, time.min, UTC) if since else None,
        until=datetime.combine(until, time.min, UTC) + timedelta(days=1) if until else None)
    page = audit.audit_page(session=session, filters=filters, before=before, limit=limit)
    query = {k: v for k, v in {"action": action, "who": who, "target_type": target_type,
                               "target_id": target_id, "since": since or "",
                               "until": until or "", "limit": limit}.items() if v}
    older = (f"/admin/audit?{urlencode({**query, 'before': page.next_before})}"
             if page.next_before else None)
    return render(request, "audit.html", page=page, f=filters, since=since, until=until,
                  actions=audit.actions(session=session), older=older,
                  newest=f"/admin/audit?{urlencode(query)}" if before else None)


@router.get("/admin/thresholds")
def thresholds_page(request: Request, session: SessionDep, policy: PolicyDep,
                    user: WebUser) -> HTMLResponse:
    """Threshold sets: the active one, proposals from calibration runs, earlier ones."""
    _analyst(user)
    from backend.calibration import thresholds

    thresholds.active_threshold_set(session=session, policy=policy)
    sets = thresholds.list_sets(session=session)
    from backend.hashes.service import hash_states

    return render(request, "thresholds.html", sets=sets, states={
        ts.version: thresholds.band_states(ts, policy=policy) for ts in sets},
        hash_states=hash_states(session=session))


# Applying and restoring a set (with a confirmation step): ``backend/reports/actions.py``.


@router.get("/reports/crowd")
def crowd_page(request: Request, session: SessionDep, user: WebUser) -> HTMLResponse:
    """Crowd pools: status, progress, answers, spend, golden accuracy, overlap effect."""
    _analyst(user)
    from backend.crowdwork import report as crowd_report

    return render(request, "crowd.html", pools=crowd_report.pool_rows(session=session),
                  overlap=crowd_report.overlap_effect(session=session))


@router.get("/reports")
def reports_page(request: Request, user: WebUser) -> HTMLResponse:
    _analyst(user)
    return render(request, "reports.html")


def _fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "–"
    return f"{ms / 1000:.1f} s"


def _fmt_dt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "–"


templates.env.filters["ms"] = _fmt_ms
templates.env.filters["dt"] = _fmt_dt


# The admin's account pages (``backend/web/accounts.py``) use the helpers above.
from backend.web import accounts  # noqa: E402

router.include_router(accounts.router)
