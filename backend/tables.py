"""Rich tables shared by the CLI and the demo (views of service results, no commands)."""

from __future__ import annotations

from datetime import date

from rich.table import Table


def queue_table(day: date | None = None, title: str = "Queues") -> Table:
    """The daily queues like the seed's table: name, priority, progress, audience."""
    from backend.db import session_scope
    from backend.queues.service import list_queues

    table = Table(title=title)
    with session_scope() as session:
        rows = list_queues(session=session, day=day)
    moved = any(r.moved for r in rows)
    for col in ("queue", "priority", "progress", "audience", "pending", "leased",
                *(("moved to crowd",) if moved else ())):
        table.add_column(col, justify="right" if col != "queue" else "left")
    for r in rows:
        q = r.queue
        table.add_row(q.name, str(q.priority), r.progress, q.audience,
                      str(r.pending), str(r.leased), *((str(r.moved),) if moved else ()))
    return table
