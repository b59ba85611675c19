"""Shared fixtures. The database tests run on SQLite and on PostgreSQL (both always;
set QUORUM_TEST_BACKENDS=sqlite to run only SQLite while iterating)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The foundation's tests route with the no-op hooks; ML tests switch ML on explicitly.
os.environ.setdefault("QUORUM_ML_ENABLED", "false")
# The suite's ingest tests expect routed items after POST /api/v1/items: route inside the
# request (the job tests switch this off and run the dispatcher / workers themselves).
os.environ.setdefault("QUORUM_JOBS_INGEST_WAIT", "true")

BACKENDS = [b for b in os.environ.get("QUORUM_TEST_BACKENDS", "sqlite,postgres").split(",") if b]
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"the shared datasets are missing at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session", params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[str]:
    """A migrated, empty database for this test session (one per backend)."""
    from backend.db import dispose_engines
    from backend.migrate import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'quorum.sqlite3'}"
        upgrade(url)
        yield url
        dispose_engines()
        return
    from tests.pg import create_database, drop_database, server_url

    server = server_url()
    url = create_database(server)
    upgrade(url)
    yield url
    dispose_engines()
    drop_database(server, url)


def _truncate(url: str) -> None:
    from backend.db import Base, get_engine

    engine = get_engine(url)
    tables = [t.name for t in Base.metadata.sorted_tables]
    with engine.begin() as conn:
        if url.startswith("sqlite"):
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            for name in reversed(tables):
                conn.execute(text(f'DELETE FROM "{name}"'))
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        else:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables)
                              + " RESTART IDENTITY CASCADE"))


@pytest.fixture
def settings(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Settings pointing at the test database and a temporary data dir (tables emptied)."""
    from backend.settings import get_settings

    _truncate(db_url)
    monkeypatch.setenv("QUORUM_DATABASE_URL", db_url)
    monkeypatch.setenv("QUORUM_DATA_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def session(settings) -> Iterator[Session]:  # noqa: ANN001
    from backend.db import get_sessionmaker

    s = get_sessionmaker(settings.resolved_database_url)()
    try:
        yield s
        s.commit()
    finally:
        s.close()


@pytest.fixture
def policy():  # noqa: ANN201
    from backend.policy import get_policy

    return get_policy()


@pytest.fixture
def client(settings):  # noqa: ANN001, ANN201
    from fastapi.testclient import TestClient

    from backend.app import create_app

    with TestClient(create_app(database_url=settings.resolved_database_url),
                    raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def make_user(settings):  # noqa: ANN001, ANN201
    """``make_user(name, role, kinds=[]) -> (user_id, token)`` committed in its own session."""
    from backend.db import session_scope
    from backend.users.service import create_user, issue_token

    def make(name: str, role: str = "moderator", kinds: list[str] | None = None,
             password: str | None = None) -> tuple[int, str]:
        with session_scope(settings.resolved_database_url) as s:
            user = create_user(session=s, username=name, role=role, queue_kinds=kinds or [],
                               password=password)
            return user.id, issue_token(session=s, user=user)

    return make


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def item_row(i: int, **over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "source": "shop", "external_id": f"X{i}", "title": f"Item {i}",
        "description": "a plain product", "price": 10.0 + i, "currency": "USD",
        "seller_id": f"S{i % 7}", "category": "home", "is_new": True,
    }
    row.update(over)
    return row


def pytest_unconfigure(config: pytest.Config) -> None:
    """After the last test: move every live object out of the cyclic collector's reach,
    so the interpreter's exit does not walk the whole suite's heap (several GB after the
    full run; the collections at exit took about 1.5 minutes on 2 cores)."""
    import gc

    gc.freeze()
