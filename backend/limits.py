"""Input limits (``QUORUM_LIMIT_*``): request body size, text and metadata shape, ids.

Everything a client sends is bounded before it reaches a service, so that one request
cannot hold the database or the CPU for long: the body size (413, by FastAPI's
``max_body_size`` middleware, which counts the bytes as they arrive), each text field
and the ``metadata`` map (422, in the schemas), integers that become database ids or
columns (422: the databases' 32-bit ``INTEGER``). Text never carries a NUL character
(PostgreSQL cannot store one). See docs/limits.md.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The largest value of a 32-bit ``INTEGER`` column (ids, positions, counters).
DB_INT_MAX = 2**31 - 1


class LimitSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUORUM_LIMIT_", extra="ignore")

    #: Largest request body accepted, in bytes (larger: 413; FastAPI's ``max_body_size``).
    max_body_bytes: int = 32 * 1024 * 1024
    #: Largest ``metadata`` of one item, in bytes of compact JSON.
    max_metadata_bytes: int = 16 * 1024
    #: Deepest nesting of maps and lists inside ``metadata``.
    max_metadata_depth: int = 8
    #: Most keys in one map (and elements in one list) inside ``metadata``.
    max_metadata_keys: int = 200
    #: Longest key inside ``metadata``, in characters.
    max_metadata_key_chars: int = 200


@lru_cache
def get_limit_settings() -> LimitSettings:
    return LimitSettings()


# ---------------------------------------------------------------- text
def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character (\\u0000)")
    return value


#: ``str`` without NUL characters (use it for every text a client sends).
Text = Annotated[str, AfterValidator(no_nul)]

#: A database id in a path (1 .. 2**31-1).
IdPath = Annotated[int, Path(ge=1, le=DB_INT_MAX)]


def page_limit(default: int | None, *, maximum: int = 10_000, description: str = "") -> Any:
    """A bounded ``limit`` query parameter."""
    return Query(default, ge=1, le=maximum, description=description or None)


# ---------------------------------------------------------------- metadata
def check_metadata(value: dict[str, Any], limits: LimitSettings | None = None) -> dict[str, Any]:
    """Refuse (``ValueError`` with a sentence) metadata that is too big, too deep, holds a
    non-finite number (NaN, Infinity: not JSON) or a NUL character in a key or string."""
    limits = limits or get_limit_settings()
    stack: list[tuple[Any, int, str]] = [(value, 1, "metadata")]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, dict | list):
            if depth > limits.max_metadata_depth:
                raise ValueError(f"{where} nests deeper than {limits.max_metadata_depth} levels")
            if len(node) > limits.max_metadata_keys:
                raise ValueError(f"{where} has {len(node)} entries; the limit is "
                                 f"{limits.max_metadata_keys}")
        if isinstance(node, dict):
            for key, child in node.items():
                key = str(key)
                if len(key) > limits.max_metadata_key_chars:
                    raise ValueError(f"a key in {where} is {len(key)} characters long; the "
                                     f"limit is {limits.max_metadata_key_chars}")
                if "\x00" in key:
                    raise ValueError(f"a key in {where} contains a NUL character")
                stack.append((child, depth + 1, f"{where}.{key[:40]}"))
        elif isinstance(node, list):
            stack.extend((child, depth + 1, f"{where}[{n}]") for n, child in enumerate(node))
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError(f"{where} is {node}; numbers must be finite")
        elif isinstance(node, str) and "\x00" in node:
            raise ValueError(f"{where} contains a NUL character")
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limits.max_metadata_bytes:
        raise ValueError(f"metadata is {size:,} bytes as JSON; the limit is "
                         f"{limits.max_metadata_bytes:,}")
    return value
