"""`DbStore`: crowd's ``Store`` protocol on our database (the ``crowd_store`` table).

Every ``put`` is its own short transaction, committed before it returns, so what a push
recorded survives a crash of the job that called it. Callers must not hold a write
transaction on the same SQLite database while crowd calls ``put`` (SQLite has one
writer): the crowd jobs in `backend.crowdwork.service` commit before every remote call.
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from backend.crowdwork.models import CrowdStoreEntry
from backend.db import utcnow


class DbStore:
    """A key → JSON-object store; ``put`` is durable when it returns."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def get(self, key: str) -> dict | None:
        with self.sessions() as session:
            value = session.scalar(select(CrowdStoreEntry.value).where(CrowdStoreEntry.key == key))
            session.rollback()
        return json.loads(json.dumps(value)) if value is not None else None

    def put(self, key: str, value: dict) -> None:
        data = json.loads(json.dumps(value))  # plain JSON only, and a copy
        with self.sessions.begin() as session:
            dialect = session.get_bind().dialect.name
            insert = pg_insert if dialect == "postgresql" else sqlite_insert
            stmt = insert(CrowdStoreEntry).values(key=key, value=data, updated_at=utcnow())
            session.execute(stmt.on_conflict_do_update(
                index_elements=[CrowdStoreEntry.key],
                set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at}))
