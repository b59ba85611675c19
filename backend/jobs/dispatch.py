"""The dispatcher: how ingest hands new items to routing, in the caller's transaction.

- ``wait``: route them now, in this transaction (``stages.route_received``): the caller
  gets routed items back (``?wait=true``, the CLI by default, the demo);
- otherwise on PostgreSQL: defer ``route`` jobs on this transaction's connection (no dual
  write: the items and their jobs commit together), for ``quorum worker`` to run;
- otherwise on SQLite: nothing to write, the items' ``received`` state is the queue; the
  in-process worker is woken after the commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from backend.jobs import inline, stages
from backend.jobs.settings import get_job_settings
from backend.routing.pipeline import RoutingSummary
from backend.settings import Settings


def accept(*, session: Session, item_ids: Sequence[int], now: datetime, settings: Settings,
           wait: bool) -> RoutingSummary | None:
    """Route ``item_ids`` (``wait``) or queue their routing; returns the summary if routed."""
    if wait:
        return stages.route_received(session=session, item_ids=item_ids, now=now,
                                     settings=settings)
    if item_ids and session.get_bind().dialect.name == "postgresql":
        from backend.jobs.engine import defer_routing

        defer_routing(session=session, item_ids=item_ids,
                      batch_size=get_job_settings().route_batch_size)
    return None


def after_commit() -> None:
    inline.notify()
