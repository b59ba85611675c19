"""Reading item files (JSONL, CSV, Parquet) with pandas into plain row dicts."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from backend.errors import ValidationFailed

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
           ".parquet": "parquet", ".pq": "parquet"}


def _clean(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT:
        return None
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return value
    return value


def read_rows(path: Path, fmt: str | None = None) -> list[dict[str, Any]]:
    """Rows of an item file. CSV columns ``metadata.KEY`` (or a JSON ``metadata`` column)
    become the item's metadata; empty cells are missing values."""
    if not path.exists():
        raise ValidationFailed(f"{path} does not exist")
    fmt = fmt or FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValidationFailed(f"cannot tell the format of {path.name}; use .jsonl, .csv or "
                               ".parquet, or pass --format")
    try:
        if fmt == "jsonl":
            df = pd.read_json(path, lines=True, dtype=False)
        elif fmt == "json":
            df = pd.read_json(path, dtype=False)
        elif fmt == "csv":
            df = pd.read_csv(path, dtype={"external_id": str, "seller_id": str,
                                          "currency": str, "golden_label": str})
        elif fmt == "parquet":
            df = pd.read_parquet(path)
        else:
            raise ValidationFailed(f"unknown format {fmt!r}")
    except ValidationFailed:
        raise
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise ValidationFailed(f"cannot read {path.name} as {fmt}: {exc}") from exc
    meta_cols = [c for c in df.columns if str(c).startswith("metadata.")]
    rows: list[dict[str, Any]] = []
    for rec in df.to_dict(orient="records"):
        row = {k: _clean(v) for k, v in rec.items() if k not in meta_cols}
        row = {k: v for k, v in row.items() if v is not None}
        if isinstance(row.get("metadata"), str):
            with contextlib.suppress(json.JSONDecodeError):  # else validation reports it
                row["metadata"] = json.loads(row["metadata"])
        meta = {c.split(".", 1)[1]: _clean(rec[c]) for c in meta_cols
                if _clean(rec[c]) is not None}
        if meta:
            base = row.get("metadata")
            if base is None or isinstance(base, dict):
                row["metadata"] = {**(base or {}), **meta}
            # else: a `metadata` cell that is not a JSON object stays as it is, and row
            # validation reports it ("metadata: ... a valid dictionary") for this row
        rows.append(row)
    return rows
