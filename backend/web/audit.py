"""The audit trail for admins and analysts: filtered, paged (newest first, keyset on the
id so a page never skips or repeats an entry while new ones arrive), rule edits shown as
diffs. Keyword-only, typed, no ``Request``."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from backend.users.models import AuditEntry, User

PAGE_MAX = 500


@dataclass
class AuditFilter:
    action: str = ""  # a prefix: "rule." finds every rule action
    who: str = ""  # a username
    target_type: str = ""
    target_id: str = ""
    since: datetime | None = None
    until: datetime | None = None


@dataclass
class AuditRow:
    entry: AuditEntry
    who: str | None
    #: For edits with a "from"/"to" text (rule conditions): a unified diff, line by line.
    diff: list[tuple[str, str]] | None


@dataclass
class AuditPage:
    rows: list[AuditRow]
    #: Pass as ``before`` for the next (older) page; None on the last page.
    next_before: int | None


def _diff(details: dict[str, Any] | None) -> list[tuple[str, str]] | None:
    if not isinstance(details, dict):
        return None
    old, new = details.get("from"), details.get("to")
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None
    lines: list[tuple[str, str]] = []
    for key in sorted(set(old) | set(new)):
        a, b = str(old.get(key, "")), str(new.get(key, ""))
        if a == b:
            continue
        for line in difflib.unified_diff(a.splitlines() or [""], b.splitlines() or [""],
                                         fromfile=f"{key} (before)", tofile=f"{key} (after)",
                                         lineterm="", n=2):
            kind = ("add" if line.startswith("+") and not line.startswith("+++") else
                    "del" if line.startswith("-") and not line.startswith("---") else "ctx")
            lines.append((kind, line))
    return lines or None


def _actor(details: Any) -> str | None:
    actor = details.get("actor") if isinstance(details, dict) else None
    return str(actor) if actor else None


def audit_page(*, session: Session, filters: AuditFilter, before: int | None = None,
               limit: int = 100) -> AuditPage:
    """One page of the audit trail, newest first, matching ``filters``."""
    limit = max(1, min(int(limit), PAGE_MAX))
    stmt = (select(AuditEntry, User.username).outerjoin(User, User.id == AuditEntry.user_id)
            .order_by(AuditEntry.id.desc()).limit(limit + 1))
    if before is not None:
        stmt = stmt.where(AuditEntry.id < before)
    if filters.action:
        stmt = stmt.where(AuditEntry.action.startswith(filters.action, autoescape=True))
    if filters.who:
        # a person, or an actor without an account (``cli:<os user>``, ``schedule``)
        stmt = stmt.where(or_(User.username == filters.who,
                              AuditEntry.details["actor"].as_string() == filters.who))
    if filters.target_type:
        stmt = stmt.where(AuditEntry.target_type == filters.target_type)
    if filters.target_id:
        stmt = stmt.where(AuditEntry.target_id == filters.target_id)
    if filters.since is not None:
        stmt = stmt.where(AuditEntry.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(AuditEntry.created_at < filters.until)
    found = session.execute(stmt).tuples().all()
    more = len(found) > limit
    found = found[:limit]
    rows = [AuditRow(entry=e, who=who or _actor(e.details), diff=_diff(e.details))
            for e, who in found]
    return AuditPage(rows=rows, next_before=found[-1][0].id if more and found else None)


def actions(*, session: Session) -> list[str]:
    """The distinct actions recorded (for the filter's choices)."""
    return sorted(session.scalars(select(AuditEntry.action).distinct()))
