"""``quorum hashes import | list | calibrate`` (registered in ``backend.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

hashes_app = typer.Typer(help="Hash banks of known images (PDQ) and their distances.",
                         no_args_is_help=True)


@hashes_app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="text or CSV: one PDQ hash (64 hex digits) a "
                                         "line, optionally ',REF'")],
    label: Annotated[str, typer.Option("--label", help="the policy label a match means")],
    bank: Annotated[str | None, typer.Option(
        "--bank", help="bank name (default: the label)")] = None,
    action: Annotated[str | None, typer.Option(
        "--action", help="decide (once the bank's distance is backed; a new bank's "
                         "default) | route")] = None,
    queue: Annotated[str | None, typer.Option(
        "--queue", help="queue kind of the matches (default HASH_MATCH)")] = None,
) -> None:
    """Import a list of PDQ hashes into a bank with a label. Idempotent; a bad line stores
    nothing (exit 2)."""
    from backend.cli import _ensure_schema, console
    from backend.db import session_scope, utcnow
    from backend.errors import ValidationFailed
    from backend.hashes.service import import_hashes, parse_hash_lines
    from backend.hashes.settings import get_hash_settings
    from backend.policy import get_policy

    _ensure_schema()
    if not file.is_file():
        raise ValidationFailed(f"no such file: {file}")
    try:
        with file.open(encoding="utf-8") as fh:
            hashes = parse_hash_lines(fh, limit=get_hash_settings().max_import)
    except UnicodeDecodeError as exc:
        raise ValidationFailed(f"{file.name} is not UTF-8 text") from exc
    with session_scope() as session:
        r = import_hashes(session=session, bank=bank or label, label=label, hashes=hashes,
                          policy=get_policy(), now=utcnow(), action=action, queue_kind=queue)
    console.print(f"bank {r.bank!r} ({r.label}): {r.added} hash(es) added, {r.already} "
                  f"already there, of {r.received} read")


@hashes_app.command("list")
def list_cmd() -> None:
    """The banks: label, action, hashes, distance and whether it decides (live/shadow)."""
    from rich.table import Table

    from backend.cli import _ensure_schema, console
    from backend.db import session_scope
    from backend.hashes.models import REUSE_KEY
    from backend.hashes.service import distance_state, list_banks

    _ensure_schema()
    with session_scope() as session:
        banks = list_banks(session=session)
        reuse = distance_state(session=session, key=REUSE_KEY)
    table = Table(title="Hash banks")
    for col in ("bank", "label", "action", "queue", "hashes", "distance", "state"):
        table.add_column(col)
    for b in banks:
        table.add_row(b["name"], b["label"], b["action"], b["queue_kind"], str(b["hashes"]),
                      str(b["distance"]), f"{b['state']}: {b['reason']}")
    console.print(table)
    console.print(f"image reuse (PDQ) distance {int(reuse.value or 0)}: {reuse.state}: "
                  f"{reuse.reason}")


@hashes_app.command("calibrate")
def calibrate_cmd(target: Annotated[float | None, typer.Option(
        "--target", min=0.5, max=1.0, help="precision target (default "
        "QUORUM_CALIBRATION_TARGET_PRECISION)")] = None) -> None:
    """Choose each bank's distance and the image reuse distance from the human-labelled
    items with an image hash (largest distance whose lower bound clears the target)."""
    from backend.cli import _ensure_schema, console
    from backend.db import session_scope, utcnow
    from backend.hashes.service import calibrate_distances

    _ensure_schema()
    with session_scope() as session:
        out = calibrate_distances(session=session, now=utcnow(), target=target)
    for key, b in out.items():
        lower = "undefined" if b["lower"] is None else f"{b['lower']:.1%}"
        console.print(f"{key}: distance {b['threshold']} "
                      f"{'backed' if b['backed'] else 'NOT backed (shadow)'}: lower bound "
                      f"{lower} >= target {b['target']:.0%}? on {b['n_auto']} match(es) of "
                      f"{b['n_labelled']} labelled image(s)")
