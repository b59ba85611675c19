from sqlalchemy import create_engine, inspect

from backend.db import Base
from backend.migrate import downgrade, upgrade


def test_upgrade_downgrade_upgrade(tmp_path, db_url):
    # on a database of its own, so the shared test database stays at head
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'mig.sqlite3'}"
        server = None
    else:
        from tests.pg import create_database, server_url

        server = server_url()
        url = create_database(server, prefix="quorum_mig")
    try:
        upgrade(url)
        engine = create_engine(url)
        tables = set(inspect(engine).get_table_names())
        assert {t.name for t in Base.metadata.sorted_tables} <= tables
        downgrade(url, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(url)
        assert {t.name for t in Base.metadata.sorted_tables} <= set(
            inspect(engine).get_table_names())
        engine.dispose()
    finally:
        if server:
            from tests.pg import drop_database

            drop_database(server, url)


def test_models_match_migrations(db_url):
    """Autogenerate finds nothing to do: the models and the migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []
