"""Alembic environment. The URL comes from ``-x url=...``, the config's
``sqlalchemy.url`` attribute (set by ``backend.migrate``), or ``QUORUM_DATABASE_URL``.

SQLite: batch mode rebuilds a table (create a copy, copy the rows, drop the original,
rename the copy). With foreign keys enforced, that DROP cascades: rebuilding ``queues``
deleted every task. So a migration on SQLite runs the way SQLite's documentation asks
(https://www.sqlite.org/lang_altertable.html#otheralter): ``PRAGMA foreign_keys=OFF``
*before* the transaction starts (the pragma is a no-op inside one, and ``backend.db``
turns it on at connect and opens every transaction with ``BEGIN IMMEDIATE``), every
revision of the run in that one transaction, then ``PRAGMA foreign_key_check`` before
the commit: a dangling reference rolls the whole run back with an error that names it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

import backend.models  # noqa: F401  (register every table)
from backend.db import Base
from backend.errors import Conflict
from backend.settings import get_settings

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    x = context.get_x_argument(as_dictionary=True)
    return (
        x.get("url")
        or config.attributes.get("url")
        or config.get_main_option("sqlalchemy.url")
        or get_settings().resolved_database_url
    )


def _include_name(name: str | None, type_: str, _parents: object) -> bool:
    """Autogenerate ignores the stash tables a downgrade leaves and the job engine's
    tables (``backend.migrate.include_name``)."""
    from backend.migrate import include_name

    return include_name(name, type_, _parents)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True, include_name=_include_name)
    with context.begin_transaction():
        context.run_migrations()


def _sqlite_foreign_keys(conn: Connection, on: bool) -> None:
    """Switch SQLite's foreign-key enforcement outside any transaction, and check it took."""
    raw = conn.connection.driver_connection
    if conn.in_transaction() or raw.in_transaction:
        raise RuntimeError("SQLite migrations need a connection outside a transaction: "
                           "PRAGMA foreign_keys cannot change inside one")
    raw.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    if bool(raw.execute("PRAGMA foreign_keys").fetchone()[0]) != on:
        raise RuntimeError("SQLite did not switch PRAGMA foreign_keys")


def check_foreign_keys(conn: Connection) -> None:
    """``PRAGMA foreign_key_check``: raise (so the run rolls back) if a row points nowhere."""
    rows = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if not rows:
        return
    counts: dict[tuple[str, str], int] = {}
    for table, _rowid, parent, _fk in rows:
        counts[(table, parent)] = counts.get((table, parent), 0) + 1
    where = "; ".join(f"{n} row(s) of {t} point to missing {p}"
                      for (t, p), n in sorted(counts.items()))
    raise Conflict(f"the migration would leave dangling references ({where}); it was "
                   "rolled back and the database is unchanged")


def _run(conn: Connection) -> None:
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        _sqlite_foreign_keys(conn, on=False)
    try:
        # SQLite can roll DDL back, so the whole run is one transaction there too.
        context.configure(connection=conn, target_metadata=target_metadata,
                          render_as_batch=True, transactional_ddl=True,
                          include_name=_include_name)
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                check_foreign_keys(conn)
    finally:
        if sqlite:
            if conn.in_transaction():
                conn.rollback()
            _sqlite_foreign_keys(conn, on=True)


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = _url()
    if url.startswith("sqlite"):
        from backend.db import make_engine

        engine = make_engine(url)
    else:
        engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
