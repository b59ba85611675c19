"""Login rate limits with the ``limits`` library: fixed windows per account and per
client address, counted in a ``limits`` storage (``QUORUM_LOGIN_RATE_LIMIT_STORAGE``).

``DatabaseStorage`` is a ``limits`` storage backed by Quorum's own database (the
``rate_limit_counters`` table): one atomic ``INSERT … ON CONFLICT DO UPDATE … RETURNING``
per hit on SQLite and PostgreSQL, so every worker process and replica shares the counts
without another service. Its writes commit on their own, outside the request's
transaction: a refused login still counts.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import case, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from backend.users.models import RateLimitCounter
from backend.users.settings import LoginSettings

_T = RateLimitCounter.__table__
#: Share of hits that also delete the expired windows (one per ~100 failed logins).
PURGE_CHANCE = 0.01


class DatabaseStorage(Storage):
    """A ``limits`` storage in the ``rate_limit_counters`` table (fixed windows)."""

    STORAGE_SCHEME = None

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def _insert(self):  # noqa: ANN202
        return (pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert)(_T)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        stmt = self._insert().values(key=key, count=amount, expires_at=now + expiry)
        expired = _T.c.expires_at <= now
        stmt = stmt.on_conflict_do_update(
            index_elements=[_T.c.key],
            set_={"count": case((expired, amount), else_=_T.c.count + amount),
                  "expires_at": case((expired, now + expiry), else_=_T.c.expires_at)},
        ).returning(_T.c.count)
        with self.engine.begin() as conn:
            count = int(conn.execute(stmt).scalar_one())
            if random.random() < PURGE_CHANCE:  # keep the table to the live windows
                conn.execute(delete(_T).where(_T.c.expires_at <= now))
            return count

    def get(self, key: str) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(select(_T.c.count).where(
                _T.c.key == key, _T.c.expires_at > time.time())).scalar()
        return int(value or 0)

    def get_expiry(self, key: str) -> float:
        with self.engine.connect() as conn:
            value = conn.execute(select(_T.c.expires_at).where(_T.c.key == key)).scalar()
        return float(value) if value is not None else time.time()

    def check(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(select(func.count()).select_from(_T))
        return True

    def reset(self) -> int | None:
        with self.engine.begin() as conn:
            return int(conn.execute(delete(_T)).rowcount or 0)

    def clear(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(_T).where(_T.c.key == key))


@dataclass(frozen=True)
class Refusal:
    """A login refused by a limit: which one, and in how many seconds to retry."""

    scope: str  # "account" or "address"
    retry_after_s: int

    @property
    def message(self) -> str:
        wait = (f"{self.retry_after_s} seconds" if self.retry_after_s < 120
                else f"{math.ceil(self.retry_after_s / 60)} minutes")
        who = "this account" if self.scope == "account" else "your address"
        return f"Too many failed logins for {who}. Try again in {wait}."


def storage_for(uri: str, engine: Engine) -> Storage:
    """``auto``: ``memory://`` on SQLite (the embedded default, one process), ``database``
    on PostgreSQL; ``database``: ``DatabaseStorage``; else a ``limits`` storage URI."""
    if uri == "auto":
        uri = "memory://" if engine.dialect.name == "sqlite" else "database"
    if uri == "database":
        return DatabaseStorage(engine)
    return storage_from_string(uri)


class LoginLimiter:
    """Failed logins counted per account and per address: ``check`` before the password
    is looked at (refused while any limit is spent, even with the right password),
    ``failed`` after a wrong one. A success does not reset the counts, so an attacker
    who also holds a valid login cannot use it to reset them."""

    def __init__(self, settings: LoginSettings, engine: Engine) -> None:
        self.storage = storage_for(settings.rate_limit_storage, engine)
        self.limiter = FixedWindowRateLimiter(self.storage)
        self.per_account: list[RateLimitItem] = parse_many(settings.limit_per_account)
        self.per_address: list[RateLimitItem] = parse_many(settings.limit_per_address)

    def _keys(self, username: str, address: str | None
              ) -> list[tuple[str, list[RateLimitItem], str]]:
        keys = [("account", self.per_account, "account:" + username.strip().casefold()[:150])]
        if address:
            keys.append(("address", self.per_address, "address:" + address[:64]))
        return keys

    def check(self, *, username: str, address: str | None) -> Refusal | None:
        now = time.time()
        for scope, items, ident in self._keys(username, address):
            for item in items:
                if not self.limiter.test(item, "login", ident):
                    reset = self.limiter.get_window_stats(item, "login", ident).reset_time
                    return Refusal(scope=scope, retry_after_s=max(1, math.ceil(reset - now)))
        return None

    def failed(self, *, username: str, address: str | None) -> None:
        for _, items, ident in self._keys(username, address):
            for item in items:
                self.limiter.hit(item, "login", ident)
