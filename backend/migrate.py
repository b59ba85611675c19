"""Run Alembic migrations from code (the CLI, the demo and the tests use this).

Also the two things a downgrade needs around it:

- **What it loses.** A revision module may say ``downgrade_drops = "…"`` (a sentence: the
  data its downgrade deletes) or ``downgrade_drops = None`` (it keeps everything, e.g. by
  stashing dropped columns with `keep_columns`). A revision that says nothing is assumed
  to drop data. `plan_downgrade` lists the revisions a downgrade undoes with that
  sentence; ``quorum db downgrade`` asks before running a plan that drops data.
- **A backup.** `backup_sqlite` copies a live SQLite database with the sqlite3 online
  backup API (consistent even while the server writes). PostgreSQL: ``pg_dump``
  (`pg_dump_hint`, docs/deploy.md).

And the helpers a downgrade uses to keep data the older schema has no column for:
`keep_columns` / `keep_table` copy it into a ``_stash_<revision>_<table>`` table that the
downgrade leaves behind; the upgrade calls `restore_columns` / `restore_table`, which
put it back and drop the stash. Downgrading to ``base`` drops the stashes too
(`drop_stashes`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, pool

ROOT = Path(__file__).resolve().parent.parent
STASH_PREFIX = "_stash_"


def pg_dump_hint(url: str) -> str:
    """The command to back a PostgreSQL database up before a downgrade (no password)."""
    from sqlalchemy.engine import make_url

    target = make_url(url).set(drivername="postgresql")._replace(password=None).render_as_string()
    return (f"PostgreSQL: take a backup first: pg_dump --format=custom "
            f"--file=quorum-before-downgrade.dump '{target}' (restore it with pg_restore "
            "--clean --if-exists; see docs/deploy.md, Migrations and backups)")


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["url"] = url
    return cfg


def script_directory(url: str = "sqlite://") -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(url))


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The revision the database is at (None: an empty database)."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


@dataclass(frozen=True)
class DowngradeStep:
    revision: str
    message: str
    drops: str | None  # what the downgrade of this revision deletes; None: nothing


def plan_downgrade(url: str, target: str) -> list[DowngradeStep]:
    """The revisions ``downgrade(url, target)`` would undo, newest first.

    Raises `ValidationFailed` for an unknown target or one above the current revision.
    """
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    from backend.errors import ValidationFailed

    current = current_revision(url)
    if current is None:
        return []
    scripts = script_directory(url)
    try:
        scripts_down = list(scripts.iterate_revisions(current, target))
    except (CommandError, RevisionError) as exc:
        raise ValidationFailed(f"cannot downgrade from {current} to {target!r}: {exc}") from exc
    steps = []
    for script in scripts_down:
        module = script.module
        drops = getattr(module, "downgrade_drops",
                        f"revision {script.revision} does not say what its downgrade keeps; "
                        "assume it drops data")
        steps.append(DowngradeStep(revision=script.revision, message=script.doc or "",
                                   drops=drops))
    return steps


def backup_sqlite(url: str, dest_dir: Path, *, label: str) -> Path:
    """Copy the SQLite database at ``url`` into ``dest_dir`` with the online backup API."""
    src_path = url.split("///", 1)[-1]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{Path(src_path).stem}-{stamp}-{label}.sqlite3"
    n = 1
    while dest.exists():
        n += 1
        dest = dest_dir / f"{Path(src_path).stem}-{stamp}-{label}-{n}.sqlite3"
    src = sqlite3.connect(src_path)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    return dest


# ----------------------------------------------------------- helpers for downgrades
def _stash_name(revision: str, table: str) -> str:
    return f"{STASH_PREFIX}{revision}_{table}"


def _has_table(name: str) -> bool:
    from alembic import op

    return inspect(op.get_bind()).has_table(name)


def keep_columns(*, revision: str, table: str, columns: Sequence[str],
                 keys: Sequence[str]) -> None:
    """Before a downgrade drops ``columns`` of ``table``: copy their non-null values, with
    the row's ``keys`` (columns that identify it at both revisions), into a stash table."""
    from alembic import op

    stash = _stash_name(revision, table)
    op.execute(f'DROP TABLE IF EXISTS "{stash}"')
    cols = ", ".join(f'"{c}"' for c in (*keys, *columns))
    any_value = " OR ".join(f'"{c}" IS NOT NULL' for c in columns)
    op.execute(f'CREATE TABLE "{stash}" AS SELECT {cols} FROM "{table}" WHERE {any_value}')


def restore_columns(*, revision: str, table: str, columns: Sequence[str],
                    keys: Sequence[str]) -> None:
    """After an upgrade re-creates ``columns``: put back what `keep_columns` stashed (rows
    still there, matched on all ``keys``) and drop the stash. No stash: nothing to do."""
    from alembic import op

    stash = _stash_name(revision, table)
    if not _has_table(stash):
        return
    match = " AND ".join(f's."{k}" = "{table}"."{k}"' for k in keys)
    for c in columns:
        op.execute(f'UPDATE "{table}" SET "{c}" = (SELECT s."{c}" FROM "{stash}" s '
                   f'WHERE {match}) WHERE EXISTS (SELECT 1 FROM "{stash}" s WHERE {match})')
    op.execute(f'DROP TABLE "{stash}"')


def keep_table(*, revision: str, table: str) -> None:
    """Before a downgrade drops ``table``: copy its rows into a stash table."""
    from alembic import op

    stash = _stash_name(revision, table)
    op.execute(f'DROP TABLE IF EXISTS "{stash}"')
    op.execute(f'CREATE TABLE "{stash}" AS SELECT * FROM "{table}"')


def restore_table(*, revision: str, table: str, columns: Sequence[str]) -> None:
    """After an upgrade re-creates ``table`` (empty): copy the stashed rows back."""
    from alembic import op

    stash = _stash_name(revision, table)
    if not _has_table(stash):
        return
    cols = ", ".join(f'"{c}"' for c in columns)
    op.execute(f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM "{stash}"')
    op.execute(f'DROP TABLE "{stash}"')


def drop_stashes() -> None:
    """Drop every stash table (a downgrade to an empty schema leaves nothing to restore)."""
    from alembic import op

    for name in inspect(op.get_bind()).get_table_names():
        if name.startswith(STASH_PREFIX):
            op.execute(f'DROP TABLE "{name}"')


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate's filter: not the stash tables a downgrade leaves, nor the job
    engine's tables (``procrastinate_*``: its own schema, applied by migration 0008)."""
    return not (type_ == "table" and name is not None
                and name.startswith((STASH_PREFIX, "procrastinate_")))
