"""``quorum users ...``: accounts, roles, passwords, API tokens, sessions, queue grants
(registered in ``backend.cli``). Every change is audited (actor: the command line)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

users_app = typer.Typer(help="Users, roles, passwords, API tokens, sessions and queue grants.",
                        no_args_is_help=True)

Username = Annotated[str, typer.Argument(help="the user's login name")]


def _console():  # noqa: ANN202
    from backend.cli import console

    return console


def _ready() -> None:
    from backend.cli import _ensure_schema

    _ensure_schema()


@users_app.command("add")
def users_add(
    username: str,
    role: Annotated[str, typer.Option(help="moderator | analyst | admin")] = "moderator",
    grant: Annotated[list[str] | None, typer.Option(
        help="queue kind the moderator may work (repeat; '*' for all)")] = None,
    password: Annotated[bool, typer.Option(
        "--password", help="ask for a web login password")] = False,
    display_name: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Create a user and print an API token (shown once)."""
    from backend.db import session_scope
    from backend.rules.service import check_queue_kinds
    from backend.settings import get_settings
    from backend.users.schemas import checked_grants
    from backend.users.service import audit, create_user, issue_token

    _ready()
    grant = checked_grants(grant or [])
    pw = typer.prompt("password", hide_input=True, confirmation_prompt=True) if password else None
    with session_scope() as session:
        check_queue_kinds(session=session, settings=get_settings(), kinds=grant)
        user = create_user(session=session, username=username, role=role, password=pw,
                           display_name=display_name, queue_kinds=grant or [])
        token = issue_token(session=session, user=user)
        audit(session=session, user=None, action="users.create", target_type="user",
              target_id=username, details={"role": role, "queue_kinds": grant or [],
                                           "via": "cli"})
    _console().print(f"created {role} {username}; API token (shown once):")
    print(token)


@users_app.command("list")
def users_list() -> None:
    """List users, roles, queue grants and whether they are active."""
    from backend.db import session_scope
    from backend.users.service import list_users

    _ready()
    table = Table(title="Users")
    for col in ("username", "role", "grants", "active"):
        table.add_column(col)
    with session_scope() as session:
        for u in list_users(session=session):
            table.add_row(u.username, u.role, ", ".join(sorted(u.granted_kinds)),
                          "yes" if u.is_active else "no")
    _console().print(table)


@users_app.command("grant")
def users_grant(username: str, kinds: Annotated[list[str], typer.Argument()]) -> None:
    """Set the queue kinds USERNAME may work (replaces the previous grants)."""
    from backend.db import session_scope
    from backend.rules.service import check_queue_kinds
    from backend.settings import get_settings
    from backend.users.schemas import checked_grants
    from backend.users.service import audit, get_user, set_grants

    _ready()
    kinds = checked_grants(kinds)
    with session_scope() as session:
        check_queue_kinds(session=session, settings=get_settings(), kinds=kinds)
        user = get_user(session=session, username=username)
        before = sorted(user.granted_kinds)
        set_grants(session=session, user=user, queue_kinds=kinds)
        audit(session=session, user=None, action="users.grants", target_type="user",
              target_id=username, details={"from": before, "to": sorted(kinds), "via": "cli"})
    _console().print(f"{username} may work: {', '.join(kinds)}")


@users_app.command("role")
def users_role(username: Username,
               role: Annotated[str, typer.Argument(help="moderator | analyst | admin")]) -> None:
    """Change USERNAME's role (the last active admin cannot be demoted)."""
    from backend.db import session_scope
    from backend.users.service import change_role, get_user

    _ready()
    with session_scope() as session:
        change_role(session=session, user=get_user(session=session, username=username),
                    role=role, actor=None, via="cli")
    _console().print(f"{username} is now {role}")


@users_app.command("deactivate")
def users_deactivate(username: Username) -> None:
    """Stop USERNAME from logging in or using their tokens; their web sessions end."""
    from backend.db import session_scope, utcnow
    from backend.users.service import deactivate_user, get_user

    _ready()
    with session_scope() as session:
        ended = deactivate_user(session=session, user=get_user(session=session,
                                                               username=username),
                                actor=None, via="cli", now=utcnow())
    _console().print(f"{username} is deactivated; {ended} web session(s) ended")


@users_app.command("reactivate")
def users_reactivate(username: Username) -> None:
    """Let USERNAME log in again (their unrevoked tokens work again)."""
    from backend.db import session_scope
    from backend.users.service import get_user, reactivate_user

    _ready()
    with session_scope() as session:
        reactivate_user(session=session, user=get_user(session=session, username=username),
                        actor=None, via="cli")
    _console().print(f"{username} may log in again")


@users_app.command("password")
def users_password(
    username: Username,
    generate: Annotated[bool, typer.Option(
        "--generate", help="set a random password and print it (shown once)")] = False,
) -> None:
    """Set USERNAME's web password (asked twice, or --generate); their sessions end."""
    from backend.db import session_scope, utcnow
    from backend.users.service import change_password, get_user, reset_password

    _ready()
    pw = None if generate else typer.prompt("new password", hide_input=True,
                                            confirmation_prompt=True)
    with session_scope() as session:
        user = get_user(session=session, username=username)
        if pw is None:
            pw, ended = reset_password(session=session, user=user, actor=None, via="cli",
                                       now=utcnow())
        else:
            ended = change_password(session=session, user=user, password=pw, actor=None,
                                    via="cli", now=utcnow())
    _console().print(f"password of {username} changed; {ended} web session(s) ended")
    if generate:
        print(pw)


@users_app.command("logout")
def users_logout(username: Username) -> None:
    """End every web session of USERNAME (password and tokens unchanged)."""
    from backend.db import session_scope, utcnow
    from backend.users.service import end_sessions, get_user

    _ready()
    with session_scope() as session:
        ended = end_sessions(session=session, user=get_user(session=session,
                                                            username=username),
                             actor=None, via="cli", now=utcnow())
    _console().print(f"{ended} web session(s) of {username} ended")


@users_app.command("tokens")
def users_tokens(username: Username) -> None:
    """List USERNAME's API tokens (id, prefix, name, created, revoked)."""
    from backend.db import session_scope
    from backend.users.service import get_user, list_tokens

    _ready()
    table = Table(title=f"API tokens of {username}")
    for col in ("id", "prefix", "name", "created", "revoked"):
        table.add_column(col)
    with session_scope() as session:
        for t in list_tokens(session=session, user=get_user(session=session,
                                                            username=username)):
            table.add_row(str(t.id), t.prefix + "…", t.name,
                          t.created_at.strftime("%Y-%m-%d %H:%M"),
                          t.revoked_at.strftime("%Y-%m-%d %H:%M") if t.revoked_at else "")
    _console().print(table)


@users_app.command("token")
def users_token(username: Username,
                name: Annotated[str, typer.Option(help="a name to recognise it by")] = "default"
                ) -> None:
    """Issue a new API token for USERNAME and print it (shown once)."""
    from backend.db import session_scope
    from backend.users.service import create_token, get_user

    _ready()
    with session_scope() as session:
        token, _ = create_token(session=session, user=get_user(session=session,
                                                               username=username),
                                actor=None, via="cli", name=name)
    _console().print(f"new API token of {username} (shown once):")
    print(token)


@users_app.command("revoke-token")
def users_revoke_token(
    username: Username,
    token_id: Annotated[int, typer.Argument(help="the token's id (quorum users tokens)")],
) -> None:
    """Revoke one of USERNAME's API tokens; it stops working at once."""
    from backend.db import session_scope, utcnow
    from backend.users.service import get_user, revoke_token

    _ready()
    with session_scope() as session:
        tok = revoke_token(session=session, user=get_user(session=session, username=username),
                           token_id=token_id, actor=None, via="cli", now=utcnow())
        prefix = tok.prefix
    _console().print(f"token {token_id} ({prefix}…) of {username} is revoked")
