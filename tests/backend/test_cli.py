"""The CLI as a user runs it: exit codes and one-sentence errors, never a stack trace."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import item_row


def quorum(settings, *args, input=None, env=None):
    env = {"QUORUM_DATABASE_URL": settings.resolved_database_url,
           "QUORUM_DATA_DIR": str(settings.data_dir), "PATH": "/usr/bin:/bin",
           "HF_HUB_OFFLINE": "1", "QUORUM_ML_ENABLED": "false", **(env or {})}
    return subprocess.run([sys.executable, "-m", "backend.cli", *args], capture_output=True,
                          text=True, env=env, input=input, timeout=120)


@pytest.fixture
def sqlite_only(db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("the CLI is exercised once; the services it calls run on both backends")


def test_ingest_jsonl_csv_parquet_idempotent(settings, tmp_path, sqlite_only):
    rows = [item_row(i) for i in range(4)]
    jl = tmp_path / "items.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows))
    r = quorum(settings, "ingest", str(jl))
    assert r.returncode == 0, r.stderr
    assert "4 created" in r.stdout
    r = quorum(settings, "ingest", str(jl))
    assert "0 created" in r.stdout and "4 unchanged" in r.stdout
    df = pd.DataFrame([item_row(i) for i in range(4, 7)])
    df["metadata.brand"] = "acme"
    csv = tmp_path / "items.csv"
    df.to_csv(csv, index=False)
    r = quorum(settings, "ingest", str(csv))
    assert r.returncode == 0 and "3 created" in r.stdout, r.stderr
    pq = tmp_path / "items.parquet"
    pd.DataFrame([item_row(i) for i in range(7, 9)]).to_parquet(pq)
    r = quorum(settings, "ingest", str(pq))
    assert r.returncode == 0 and "2 created" in r.stdout, r.stderr
    r = quorum(settings, "queues")
    assert "NEW_PRODUCTS_" in r.stdout and "0 / 9" in r.stdout


def test_bad_file_stores_nothing_exit_2(settings, tmp_path, sqlite_only):
    jl = tmp_path / "bad.jsonl"
    jl.write_text(json.dumps(item_row(1)) + "\n" + json.dumps(item_row(2, price="cheap")))
    r = quorum(settings, "ingest", str(jl))
    assert r.returncode == 2
    assert "row 2: price" in r.stderr and "nothing was stored" in r.stderr
    assert "Traceback" not in r.stderr
    r = quorum(settings, "ingest", "--partial", str(jl))
    assert r.returncode == 0 and "1 created" in r.stdout and "1 rejected" in r.stdout
    r = quorum(settings, "ingest", str(tmp_path / "missing.jsonl"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    (tmp_path / "x.txt").write_text("hello")
    r = quorum(settings, "ingest", str(tmp_path / "x.txt"))
    assert r.returncode == 2 and "format" in r.stderr


def test_rules_load_list_backtest(settings, tmp_path, sqlite_only):
    f = tmp_path / "rules.yaml"
    f.write_text("- {name: cheap, expression: 'has(item.price) && item.price < 12.0', "
                 "action: decide, label: fraud}\n")
    assert quorum(settings, "rules", "load", str(f)).returncode == 0
    jl = tmp_path / "items.jsonl"
    jl.write_text("\n".join(json.dumps(item_row(i)) for i in range(5)))
    quorum(settings, "ingest", str(jl))
    r = quorum(settings, "rules", "backtest", "cheap")
    assert r.returncode == 0 and "2 hits of 5 items" in r.stdout
    r = quorum(settings, "rules", "list")
    assert "cheap" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: b, expression: 'item.price <', action: decide, label: ok}\n")
    r = quorum(settings, "rules", "load", str(bad))
    assert r.returncode == 2 and "column 13" in r.stderr and "Traceback" not in r.stderr
    r = quorum(settings, "rules", "backtest", "nope")
    assert r.returncode == 3 and "no rule" in r.stderr


def test_users_add_prints_token_once(settings, sqlite_only):
    r = quorum(settings, "users", "add", "mia", "--role", "moderator", "--grant", "MANUAL")
    assert r.returncode == 0
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith("qrm_") and len(token) > 30
    r = quorum(settings, "users", "add", "mia")
    assert r.returncode == 4 and "already exists" in r.stderr
    r = quorum(settings, "users", "add", "x", "--role", "boss")
    assert r.returncode == 2 and "role" in r.stderr
    r = quorum(settings, "users", "list")
    assert "mia" in r.stdout and "MANUAL" in r.stdout


def _items_in_db(settings) -> int:
    from sqlalchemy import func, select

    from backend.db import session_scope
    from backend.items.models import Item

    with session_scope(settings.resolved_database_url) as s:
        return s.scalar(select(func.count()).select_from(Item))


@pytest.mark.parametrize("batch", ["-1", "0"])
def test_ingest_batch_must_be_positive(settings, tmp_path, sqlite_only, batch):
    """``--batch -1`` used to exit 0 having ingested nothing (``0``: a traceback)."""
    jl = tmp_path / "items.jsonl"
    jl.write_text("\n".join(json.dumps(item_row(i)) for i in range(3)))
    r = quorum(settings, "ingest", "--batch", batch, str(jl))
    assert r.returncode == 2, r.stdout
    assert "--batch" in r.stderr and "greater than or equal to 1" in r.stderr
    assert "Traceback" not in r.stderr
    assert _items_in_db(settings) == 0
    r = quorum(settings, "ingest", "--batch", "2", str(jl))
    assert r.returncode == 0 and "3 created" in r.stdout, r.stderr


def test_csv_metadata_cell_and_metadata_columns(settings, tmp_path, sqlite_only):
    """A CSV with a ``metadata`` column and ``metadata.KEY`` columns: a JSON object cell is
    merged with the columns; a cell that is not one is that row's error (it was a
    TypeError traceback)."""
    df = pd.DataFrame([item_row(1), item_row(2)])
    df["metadata"] = ["not json", json.dumps({"colour": "red"})]
    df["metadata.brand"] = "acme"
    csv = tmp_path / "items.csv"
    df.to_csv(csv, index=False)
    r = quorum(settings, "ingest", str(csv))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "row 1: metadata" in r.stderr and "nothing was stored" in r.stderr
    assert "row 2" not in r.stderr
    r = quorum(settings, "ingest", "--partial", str(csv))
    assert r.returncode == 0 and "1 created" in r.stdout and "1 rejected" in r.stdout
    from backend.db import session_scope
    from backend.items.models import Item

    with session_scope(settings.resolved_database_url) as s:
        [item] = s.query(Item).all()
        assert (item.external_id, item.metadata_) == ("X2", {"colour": "red", "brand": "acme"})


POLICY_ERRORS = {
    "yaml": ("version: 1\nlabels: [\n", "is not valid YAML at line 3"),
    "version": ("version: abc\nlabels:\n  - {key: ok, kind: ok}\n",
                "version must be a whole number, not 'abc'"),
    "duplicate key": ("labels:\n  - {key: ok, kind: ok}\n  - {key: spam, kind: bad}\n"
                      "  - {key: spam, kind: hide}\n", "label key 'spam' is used by more"),
    "duplicate shortcut": ("labels:\n  - {key: ok, kind: ok, shortcut: '1'}\n"
                           "  - {key: spam, kind: bad, shortcut: '1'}\n",
                           "label shortcut '1' is used by more"),
    "not a mapping": ("- ok\n- spam\n", "must be a mapping"),
    "no labels": ("version: 2\n", "`labels` must be a non-empty list"),
    "directory": (None, "is a directory"),
}


@pytest.mark.parametrize("case", sorted(POLICY_ERRORS))
def test_bad_policy_file_exit_2(settings, tmp_path, sqlite_only, case):
    text, sentence = POLICY_ERRORS[case]
    path = tmp_path / "policy.yaml"
    if text is None:
        path.mkdir()
    else:
        path.write_text(text)
    jl = tmp_path / "items.jsonl"
    jl.write_text(json.dumps(item_row(1)))
    r = quorum(settings, "ingest", str(jl), env={"QUORUM_POLICY_PATH": str(path)})
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and sentence in line and "policy" in line
    assert _items_in_db(settings) == 0


def test_policy_version_and_good_file(tmp_path):
    from backend.policy import load_policy

    path = tmp_path / "policy.yaml"
    path.write_text("name: tiny\nversion: '3'\nlabels:\n  - {key: ok, kind: ok}\n"
                    "  - {key: spam, kind: bad, shortcut: s}\n")
    policy = load_policy(str(path))
    assert (policy.name, policy.version, policy.keys) == ("tiny", 3, ["ok", "spam"])
