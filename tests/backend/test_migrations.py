"""Migrations keep data: every revision round-trips a filled database (the demo's).

The filled database is made once per backend by the demo itself (a small ``--items``),
topped up where the demo leaves a table empty, in a database of its own so the shared
test database stays at head. Revisions come from Alembic's script directory, so a new
migration is covered the day it is added.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import create_engine, inspect, text

from backend.db import Base
from backend.migrate import downgrade, include_name, script_directory, upgrade

#: Every revision, newest first; downgrading to each and back covers each downgrade.
REVISIONS = [s.revision for s in script_directory().walk_revisions()]
HEAD = REVISIONS[0]
#: Besides primary and foreign keys: the columns a user would check after a migration.
KEY_COLUMNS = {"state", "label", "golden_label", "source", "kind", "status", "outcome",
               "assignment_status", "name", "username", "role", "version", "mode", "action",
               "audience", "task_type", "external_id", "key", "is_golden", "is_human",
               "is_active", "aggregated", "queue_kind", "tag", "rule_version", "lease_count",
               "task_attempt", "confidence"}
#: Tables the fill must reach (every table of the schema at the time of writing).
FILLED = {"items", "item_status", "item_embeddings", "item_scores", "item_tags", "rules",
          "rule_versions", "rule_hits", "queues", "tasks", "task_skips", "decision_events",
          "judgments", "crowd_pools", "crowd_tasks", "crowd_store", "calibration_runs",
          "threshold_sets", "model_artifacts", "users", "api_tokens", "queue_grants",
          "audit_log", "hash_banks", "bank_hashes", "item_hashes", "hash_distances",
          "golden_items"}


def _key_columns(insp, table: str) -> list[str]:  # noqa: ANN001
    pk = insp.get_pk_constraint(table)["constrained_columns"]
    fks = {c for fk in insp.get_foreign_keys(table) for c in fk["constrained_columns"]}
    cols = [c["name"] for c in insp.get_columns(table)]
    keep = [c for c in cols if c in pk or c in fks or c in KEY_COLUMNS or c.endswith("_id")]
    return pk + [c for c in keep if c not in pk]


def snapshot(url: str) -> dict[str, dict[str, list]]:
    """Per table: each key column's values in primary-key order (``#rows``: the count)."""
    engine = create_engine(url)
    try:
        insp = inspect(engine)
        out: dict[str, dict[str, list]] = {}
        with engine.connect() as conn:
            for table in insp.get_table_names():
                if table == "alembic_version":
                    continue
                cols = _key_columns(insp, table)
                order = ", ".join(f'"{c}"' for c in
                                  insp.get_pk_constraint(table)["constrained_columns"] or cols)
                rows = conn.execute(text(
                    f'SELECT {", ".join(chr(34) + c + chr(34) for c in cols)} FROM "{table}" '
                    f"ORDER BY {order}")).all()
                out[table] = {"#rows": [len(rows)]} | {
                    c: [r[i] for r in rows] for i, c in enumerate(cols)}
        return out
    finally:
        engine.dispose()


def differences(before: dict, after: dict, *, same_tables: bool) -> list[str]:
    """What changed between two snapshots (tables and columns both have, or all of them)."""
    problems = []
    if same_tables and set(before) != set(after):
        problems.append(f"tables differ: lost {sorted(set(before) - set(after))}, "
                        f"gained {sorted(set(after) - set(before))}")
    for table in sorted(set(before) & set(after)):
        for col in sorted(set(before[table]) & set(after[table])):
            if before[table][col] != after[table][col]:
                b, a = before[table][col], after[table][col]
                changed = sum(x != y for x, y in zip(b, a, strict=False)) + abs(len(b) - len(a))
                problems.append(f"{table}.{col}: {changed} value(s) changed"
                                if col != "#rows" else f"{table}: {b[0]} rows -> {a[0]}")
        if same_tables and set(before[table]) != set(after[table]):
            problems.append(f"{table}: columns differ")
    return problems


def _fill_like_the_demo(url: str, data_dir: Path) -> None:
    from backend.calibration.settings import get_calibration_settings
    from backend.crowdwork.settings import get_crowd_settings
    from backend.crowdwork.store import DbStore
    from backend.db import get_sessionmaker, session_scope, utcnow
    from backend.demo import run_demo
    from backend.ml_adapter import service as ml_service
    from backend.ml_adapter.settings import get_ml_settings
    from backend.queues.models import Task
    from backend.queues.service import lease_next, release
    from backend.settings import get_settings
    from backend.users.service import audit, get_user

    run_demo(n_items=160, seed=3, moderated=60, console=Console(file=io.StringIO()))
    # What the demo leaves empty: an audit entry, a skipped task, a crowd-store entry.
    settings = get_settings()
    with session_scope(url) as session:
        admin = get_user(session=session, username="admin")
        audit(session=session, user=admin, action="test.fill", target_type="user",
              target_id=admin.id, details={"why": "migration round trip"})
        alice = get_user(session=session, username="alice")
        task = lease_next(session=session, user=alice, now=utcnow(), settings=settings)
        assert task is not None, "the demo left no pending moderator task to skip"
        release(session=session, task=session.get(Task, task.id), user=alice, now=utcnow(),
                skip=True)
    DbStore(get_sessionmaker(url)).put("test/fill", {"pool": 1, "tasks": ["a", "b"]})
    # hash banks (0019): a bank, an item's image hash, the calibrated distances
    from backend.hashes.matching import store_item_hash
    from backend.hashes.service import calibrate_distances, import_hashes
    from backend.items.models import Item
    from backend.policy import get_policy

    with session_scope(url) as session:
        import_hashes(session=session, bank="known-bad", label="prohibited", policy=get_policy(),
                      hashes=[("f" * 64, "case-1"), ("0f" * 32, None)], now=utcnow())
        item = session.scalars(Item.__table__.select().with_only_columns(Item.id).limit(1)).one()
        store_item_hash(session=session, item_id=item, hash_hex="f" * 64, quality=90,
                        content_hash=None, now=utcnow())
        calibrate_distances(session=session, now=utcnow())
    # the golden set's life cycle (0022): the demo's most shown control tasks retired
    from backend.crowdwork.gold import retire_overexposed

    with session_scope(url) as session:
        assert retire_overexposed(session, cap=1, now=utcnow()), "the demo showed no control task"
    for clear in (get_settings, get_ml_settings, get_calibration_settings, get_crowd_settings):
        clear.cache_clear()
    ml_service._stores.clear()
    ml_service._classifiers.clear()


@pytest.fixture(scope="module")
def filled(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of its own, filled by the demo; its URL (QUORUM_* point at it)."""
    from backend.calibration.settings import get_calibration_settings
    from backend.crowdwork.settings import get_crowd_settings
    from backend.db import dispose_engines
    from backend.ml_adapter import service as ml_service
    from backend.ml_adapter.settings import get_ml_settings
    from backend.settings import get_settings

    tmp = tmp_path_factory.mktemp("filled")
    server = None
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp / 'quorum.sqlite3'}"
    else:
        from tests.pg import create_database, server_url

        server = server_url()
        url = create_database(server, prefix="quorum_mig")
    env = {"QUORUM_DATABASE_URL": url, "QUORUM_DATA_DIR": str(tmp / "var"),
           "QUORUM_ML_ENABLED": "true", "QUORUM_ML_ENCODER": "hashing",
           "QUORUM_ML_INDEX_KIND": "exact", "QUORUM_ML_MIN_TRAIN_VERDICTS": "20"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        for clear in (get_settings, get_ml_settings, get_calibration_settings,
                      get_crowd_settings):
            clear.cache_clear()
        ml_service._stores.clear()
        ml_service._classifiers.clear()
        try:
            _fill_like_the_demo(url, tmp / "var")
            dispose_engines()
            yield url
        finally:
            dispose_engines()
            for clear in (get_settings, get_ml_settings, get_calibration_settings,
                          get_crowd_settings):
                clear.cache_clear()
            if server:
                from tests.pg import drop_database

                drop_database(server, url)


@pytest.fixture(scope="module")
def before(filled: str) -> dict:
    snap = snapshot(filled)
    empty = sorted(t for t in FILLED if snap.get(t, {"#rows": [0]})["#rows"][0] == 0)
    assert not empty, f"the fill left these tables empty: {empty}"
    # the columns the old downgrade of 0003 dropped hold data worth keeping
    assert any(v is not None for v in snap["judgments"]["assignment_status"])
    assert any(v is not None for v in snap["crowd_tasks"]["outcome"])
    assert any(v is not None for v in snap["decision_events"]["task_id"])
    # 0005's attempts (moderator verdicts of the demo) must survive a round trip too
    assert any(v is not None for v in snap["judgments"]["task_attempt"])
    # 0023's lease order: tasks the classifier scored (0.5 is the never-scored default)
    assert any(v != 0.5 for v in snap["tasks"]["confidence"])
    return snap


@pytest.mark.parametrize("revision", REVISIONS[1:])
def test_round_trip_keeps_rows_and_key_columns(filled, before, revision):
    """Downgrade the filled database to REVISION (rows of the tables kept there stay
    put), upgrade back to head: every table's row count and key columns are unchanged."""
    downgrade(filled, revision)
    assert differences(before, snapshot(filled), same_tables=False) == []
    upgrade(filled)
    assert differences(before, snapshot(filled), same_tables=True) == []


def test_at_head(filled, before):
    assert snapshot(filled) == before


def _quorum(url: str, data_dir: Path, *args: str, stdin=subprocess.DEVNULL,  # noqa: ANN001
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"QUORUM_DATABASE_URL": url, "QUORUM_DATA_DIR": str(data_dir),
           "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "QUORUM_ML_ENABLED": "false",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "backend.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300,
                          **({"input": input} if input is not None else {"stdin": stdin}))


def test_cli_downgrade_0003_then_queues_keeps_every_task(filled, before, tmp_path):
    """The reported reproduction: ``quorum db downgrade 0003 && quorum queues`` (any
    command upgrades on start) deleted every task on SQLite."""
    if not filled.startswith("sqlite"):
        pytest.skip("the CLI is exercised once; the round trip above runs on both backends")
    shown = _quorum(filled, tmp_path, "queues")
    assert shown.returncode == 0, shown.stderr
    r = _quorum(filled, tmp_path, "db", "downgrade", "0003")
    assert r.returncode == 0, r.stderr
    backup = Path(re.search(r"backup of the database before the downgrade: (\S+)",
                            r.stdout).group(1))
    r = _quorum(filled, tmp_path, "queues")
    assert r.returncode == 0, r.stderr
    assert r.stdout == shown.stdout  # same queues, same progress done / total
    assert differences(before, snapshot(filled), same_tables=True) == []
    # the backup is a complete copy of the database at head, taken by the online backup API
    assert differences(before, snapshot(f"sqlite:///{backup}"), same_tables=True) == []


@pytest.fixture
def small_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'small.sqlite3'}"
    upgrade(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (username, role, is_active, created_at) "
                          "VALUES ('ann', 'admin', 1, '2026-12-01 00:00:00')"))
    engine.dispose()
    return url


def _users(url: str) -> int | None:
    engine = create_engine(url)
    try:
        if not inspect(engine).has_table("users"):
            return None
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM users")).scalar_one()
    finally:
        engine.dispose()


def test_downgrade_base_needs_confirmation(small_db, tmp_path):
    r = _quorum(small_db, tmp_path, "db", "downgrade", "base")  # no stdin, as in CI
    assert r.returncode == 2, r.stderr
    assert "was not confirmed" in r.stderr and "--yes" in r.stderr
    assert "drops every table" in r.stderr and "Traceback" not in r.stderr
    assert _users(small_db) == 1
    r = _quorum(small_db, tmp_path, "db", "downgrade", "base", input="n\n")
    assert r.returncode == 2 and _users(small_db) == 1
    assert not (tmp_path / "backups").exists()  # nothing happened, not even a backup
    r = _quorum(small_db, tmp_path, "db", "downgrade", "base", input="y\n")
    assert r.returncode == 0, r.stderr
    assert _users(small_db) is None
    [backup] = (tmp_path / "backups").iterdir()
    assert str(backup) in r.stdout and _users(f"sqlite:///{backup}") == 1


def test_downgrade_yes_and_bad_revisions(small_db, tmp_path):
    r = _quorum(small_db, tmp_path, "db", "downgrade", "nope")
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr
    r = _quorum(small_db, tmp_path, "db", "downgrade", "0001")  # keeps data: no question
    assert r.returncode == 0, r.stderr
    r = _quorum(small_db, tmp_path, "db", "downgrade", HEAD)  # above the current one
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = _quorum(small_db, tmp_path, "db", "downgrade", "base", "--yes")
    assert r.returncode == 0, r.stderr
    assert _users(small_db) is None
    r = _quorum(small_db, tmp_path, "db", "upgrade")
    assert r.returncode == 0 and _users(small_db) == 0


def test_a_dangling_reference_rolls_the_migration_back(tmp_path):
    """``PRAGMA foreign_key_check`` runs before the commit: a migration that leaves a row
    pointing nowhere fails loudly and the database stays at its revision, rows intact."""
    from alembic import command

    from backend.errors import Conflict
    from backend.migrate import ROOT, alembic_config

    scripts = tmp_path / "migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text((ROOT / "migrations" / "env.py").read_text())
    (scripts / "script.py.mako").write_text((ROOT / "migrations" / "script.py.mako")
                                            .read_text())
    for f in (ROOT / "migrations" / "versions").glob("*.py"):
        (scripts / "versions" / f.name).write_text(f.read_text())
    (scripts / "versions" / "9999_dangling.py").write_text(
        f'"""test: a migration that breaks a reference"""\n'
        f"from alembic import op\n"
        f"revision = 'dangling'\ndown_revision = {HEAD!r}\n"
        f"branch_labels = None\ndepends_on = None\n\n"
        f"def upgrade():\n"
        f"    op.execute(\"UPDATE api_tokens SET user_id = 12345\")\n\n"
        f"def downgrade():\n    pass\n")
    url = f"sqlite:///{tmp_path / 'fk.sqlite3'}"
    upgrade(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, username, role, is_active, created_at) "
                          "VALUES (1, 'ann', 'admin', 1, '2026-12-01 00:00:00')"))
        conn.execute(text("INSERT INTO api_tokens (user_id, name, token_hash, prefix, "
                          "created_at) VALUES (1, 't', 'h', 'p', '2026-12-01 00:00:00')"))
    cfg = alembic_config(url)
    cfg.set_main_option("script_location", str(scripts))
    with pytest.raises(Conflict, match="1 row.s. of api_tokens point to missing users"):
        command.upgrade(cfg, "head")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD
        assert conn.execute(text("SELECT user_id FROM api_tokens")).scalar() == 1
    engine.dispose()


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
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"include_name": include_name}),
            Base.metadata)
    engine.dispose()
    assert diff == []


def test_postgres_downgrade_prints_pg_dump_and_asks(db_url, tmp_path):
    if db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL only (SQLite is backed up, see above)")
    from tests.pg import create_database, drop_database, server_url

    server = server_url()
    url = create_database(server, prefix="quorum_mig")
    try:
        upgrade(url)
        r = _quorum(url, tmp_path, "db", "downgrade", "base")
        assert r.returncode == 2, r.stderr
        assert "pg_dump --format=custom" in r.stderr and "was not confirmed" in r.stderr
        assert _users(url) == 0  # nothing was dropped
        r = _quorum(url, tmp_path, "db", "downgrade", "base", "--yes")
        assert r.returncode == 0, r.stderr
        assert _users(url) is None and not (tmp_path / "backups").exists()
    finally:
        from backend.db import dispose_engines

        dispose_engines()
        drop_database(server, url)
