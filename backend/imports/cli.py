"""``quorum import verdicts FILE`` (registered in ``backend.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import_app = typer.Typer(help="Bring your history: labelled items as human decisions.",
                         no_args_is_help=True)


@import_app.command("verdicts")
def import_verdicts_cmd(
    file: Annotated[Path, typer.Argument(help="CSV, JSONL or Parquet: item fields + label, "
                                         "decided_by, decided_at, sampling_probability")],
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl | csv | parquet")] = None,
    partial: Annotated[bool, typer.Option(help="store the valid rows even if some are bad")
                       ] = False,
    batch: Annotated[int, typer.Option(min=1, help="rows per transaction")] = 10_000,
) -> None:
    """Import labelled items as human decisions (source ``import``): no queues, no tasks.

    The whole file is checked first: with a bad row nothing is stored (exit 2) unless
    --partial. Re-running on the same file changes nothing. Then `quorum train` and
    `quorum calibrate` learn from the imported verdicts.
    """
    from backend.cli import _ensure_schema, console, err
    from backend.db import session_scope, utcnow
    from backend.errors import QuorumError, ValidationFailed
    from backend.imports.service import check_rows, import_verdicts
    from backend.io import read_rows
    from backend.policy import get_policy

    _ensure_schema()
    policy = get_policy()
    rows = read_rows(file, fmt)
    if not rows:
        raise ValidationFailed(f"{file.name} holds no rows")
    totals = {"items_created": 0, "items_updated": 0, "decisions": 0, "relabelled": 0,
              "unchanged": 0, "kept": 0, "rejected": 0}
    if not partial:  # check every row before storing any (a later chunk may be bad)
        errors = check_rows(rows, policy=policy)
        if errors:
            for e in errors[:20]:
                err.print(f"row {e.row}: {e.field or '-'}: {e.message}")
            if len(errors) > 20:
                err.print(f"... and {len(errors) - 20} more")
            raise QuorumError(f"{len(errors)} bad row(s) in {file.name}; nothing was stored "
                              "(fix them, or use --partial to store the valid rows)")
    for start in range(0, len(rows), batch):
        with session_scope() as session:
            result = import_verdicts(session=session, rows=rows[start:start + batch],
                                     policy=policy, partial=True, now=utcnow())
        for k in totals:
            totals[k] += getattr(result, k)
        for e in result.errors[:20]:
            err.print(f"row {start + e.row}: {e.field or '-'}: {e.message}")
    console.print(f"{len(rows)} row(s): {totals['decisions']} verdict(s) imported "
                  f"({totals['relabelled']} relabelled), {totals['unchanged']} unchanged, "
                  f"{totals['kept']} kept (a verdict made in Quorum stands), "
                  f"{totals['rejected']} rejected; items: {totals['items_created']} new, "
                  f"{totals['items_updated']} updated")
