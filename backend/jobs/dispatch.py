"""The dispatcher: how ingest hands new items to routing, in the caller's transaction.

- ``wait``: commit the caller's transaction (the items are durable), then route them now
  (``stages.route_staged``: the rules are evaluated before the routing transaction, never
  under the write lock) and hand back the summary (``?wait=true``, the CLI by default,
  the demo). On PostgreSQL their ``route`` jobs are deferred too, before that commit: if
  the process dies after it, a worker routes them (a job that finds them routed does
  nothing);
- otherwise on PostgreSQL: defer ``route`` jobs on this transaction's connection (no dual
  write: the items and their jobs commit together), for ``quorum worker`` to run;
- otherwise on SQLite: nothing to write, the items' ``received`` state is the queue; the
  in-process worker is woken after the commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from backend.jobs import inline, stages
from backend.jobs.settings import get_job_settings
from backend.routing.pipeline import RoutingSummary
from backend.settings import Settings


def accept(*, session: Session, item_ids: Sequence[int], now: datetime, settings: Settings,
           wait: bool) -> RoutingSummary | None:
    """Route ``item_ids`` (``wait``) or queue their routing; returns the summary if routed.

    With ``wait`` the caller's transaction is committed here (the session stays usable:
    what the caller writes afterwards is a new transaction)."""
    if item_ids and session.get_bind().dialect.name == "postgresql":
        from backend.jobs.engine import defer_routing

        defer_routing(session=session, item_ids=item_ids,
                      batch_size=get_job_settings().route_batch_size)
    if not wait:
        return None
    session.commit()
    if not item_ids:
        return RoutingSummary()
    factory = sessionmaker(bind=session.get_bind(), expire_on_commit=False)
    return stages.route_staged(sessions=factory, item_ids=item_ids, settings=settings,
                               now=now)


def after_commit() -> None:
    inline.notify()
