"""Input limits (``QUORUM_LIMIT_*``): request body size, text and metadata shape, ids.

Everything a client sends is bounded before it reaches a service, so that one request
cannot hold the database or the CPU for long: the body size (413, by the ASGI middleware
``BodySizeLimit``, which counts the bytes as they arrive), each text field
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
from pydantic import BaseModel, BeforeValidator, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The largest value of a 32-bit ``INTEGER`` column (ids, positions, counters).
DB_INT_MAX = 2**31 - 1


class LimitSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUORUM_LIMIT_", extra="ignore")

    #: Largest request body accepted, in bytes (larger: 413).
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
def no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain a NUL character (\\u0000)")
    return value


#: ``str`` without NUL characters, for parameters (bodies: ``NoNulModel``).
Text = Annotated[str, BeforeValidator(no_nul)]


class NoNulModel(BaseModel):
    """A request body whose text fields never hold a NUL character (PostgreSQL cannot
    store one). Checked after each field's own constraints, so their messages stay."""

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return no_nul(value)

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


# ---------------------------------------------------------------- body size
class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 and Quorum's error body.

    A declared ``Content-Length`` over the limit is refused before anything is read (the
    server then holds the body to that length); a body without one (chunked) is read here
    up to the limit and handed on only when it fits. (FastAPI's own ``max_body_size``
    answers a declared length with a plain-text 413 that replaces any handler's body.)
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        if declared is not None:
            if declared > self.max_bytes:
                await self._too_large(send)
                return
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        seen = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: nobody to answer
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                await self._too_large(send)
                return
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any) -> None:
        body = json.dumps({"error": "payload_too_large", "message": (
            f"the request body is over the limit of {self.max_bytes:,} bytes "
            "(QUORUM_LIMIT_MAX_BODY_BYTES); send smaller batches")}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
