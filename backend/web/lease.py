"""Keeping a work-view lease alive while the moderator is active.

A lease lasts ``settings.lease_seconds``; the work view renews it on activity (a key press,
a mouse move) once half of it has gone, and warns a minute before it lapses. Renewal is one
conditional ``UPDATE`` checked by its row count: only the moderator who still holds the
task can extend it, so a renewal can never take back a task someone else leased after
the lease ran out.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from backend.errors import LeaseLost
from backend.queues.models import Task
from backend.settings import Settings
from backend.users.models import User


def renew_lease(*, session: Session, task_id: int, user: User, now: datetime,
                settings: Settings) -> datetime:
    """Extend ``user``'s lease on ``task_id`` to ``now + lease_seconds``; returns the new
    deadline. ``LeaseLost`` (409) when the task is no longer leased by ``user``."""
    deadline = now + timedelta(seconds=settings.lease_seconds)
    result = session.execute(
        update(Task).where(Task.id == task_id, Task.state == "leased",
                           Task.lease_owner_id == user.id)
        .values(lease_expires_at=deadline).execution_options(synchronize_session=False))
    if (result.rowcount or 0) != 1:  # type: ignore[attr-defined]
        raise LeaseLost(f"task {task_id} is no longer leased by you: the lease ran out and "
                        "the task went back to its queue")
    return deadline
