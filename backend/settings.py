"""Configuration from the environment (prefix ``QUORUM_``), read via a cached ``get_settings()``.

Settings are split per area; each area has its own prefix so that the names stay
short and grep-able, e.g. ``QUORUM_DATABASE_URL`` or ``QUORUM_QUEUE_CHUNK_SIZE``.
Nothing here is read at import time.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PRIORITIES: dict[str, int] = {
    "SPOT_CHECK": 97,
    "HASH_MATCH": 92,
    "ANALYTICAL_GOOD": 96,
    "ML_GOOD": 91,
    "ML_BAD_HIGH": 90,
    "GMV": 82,
    "EXP_V": 82,
    "GL": 79,
    "ML_BAD_MIDDLE": 66,
    "ML_HIDE_MIDDLE": 60,
    "NEW_PRODUCTS": 57,
    "SIMILAR_CONFLICT": 70,
    "MANUAL": 50,
    "OVERFLOW": 64,
}

DEFAULT_CROWD_KINDS: list[str] = ["NEW_PRODUCTS", "GL", "ML_GOOD"]


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")


class Settings(_Base):
    """Top-level settings (``QUORUM_*``)."""

    model_config = SettingsConfigDict(env_prefix="QUORUM_", extra="ignore")

    #: SQLAlchemy URL. Default: a SQLite file under ``data_dir``.
    database_url: str | None = None
    #: Where the embedded default keeps its SQLite file, vector index, models and reports.
    data_dir: Path = Path("var")
    #: Echo SQL statements (debugging).
    database_echo: bool = False
    #: Path to the policy YAML (labels, which are bad). Default: the bundled marketplace policy.
    policy_path: Path | None = None
    #: Secret that signs web session cookies (at least 32 bytes). Unset: the file
    #: ``<data_dir>/secret_key`` (``quorum demo`` writes one); the server refuses to start
    #: without either, or with a short or well-known key.
    secret_key: SecretStr | None = None
    #: Mark session cookies ``Secure`` on every response (set it behind a TLS-terminating
    #: proxy that talks plain HTTP to Quorum); unset, only requests that arrive over HTTPS.
    cookie_secure: bool = False
    #: Default lease length for a moderator task, in seconds.
    lease_seconds: int = 300
    #: Which task of a queue a moderator gets next: ``value`` (the item whose decision is
    #: likeliest to flip — 1 − the classifier's top probability — then the oldest) or
    #: ``oldest``. Queues are still taken by priority, day and chunk first.
    moderator_order: Literal["value", "oldest"] = "value"
    #: Tasks moderators work in a day (0: no limit). Beyond it, the pending tasks of
    #: ``moderator_overflow_from`` with the lowest expected value (1 − the classifier's top
    #: probability, × the queue's priority) move to the crowd's ``moderator_overflow_kind``
    #: queue (`backend.queues.overflow`); see docs/crowd.md.
    moderator_daily_capacity: int = Field(0, ge=0, le=10_000_000)
    #: Moderator queue kinds whose tasks may move to the crowd when the day is full (never
    #: spot checks, hash matches, appeals, pairs or the crowd's own returns).
    moderator_overflow_from: list[str] = Field(
        default_factory=lambda: ["ML_BAD_MIDDLE", "ML_HIDE_MIDDLE"])
    #: The crowd queue kind overflowing tasks move to (worked by the crowd).
    moderator_overflow_kind: str = "OVERFLOW"
    #: Size of a daily queue chunk (``KIND_DATE_1``, ``_2``, ...).
    queue_chunk_size: int = 7500
    #: Kinds whose daily queues are always numbered (``NEW_PRODUCTS_2026-11-24_1``); other
    #: kinds get a suffix only from their second chunk on.
    queue_chunked_kinds: list[str] = Field(default_factory=lambda: ["NEW_PRODUCTS"])
    #: Priority per queue kind; unknown kinds get ``default_priority``.
    queue_priorities: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_PRIORITIES))
    default_priority: int = 50
    #: Queue kinds worked by the crowd rather than in-house moderators.
    crowd_queue_kinds: list[str] = Field(default_factory=lambda: list(DEFAULT_CROWD_KINDS))
    #: Largest batch accepted by ``POST /api/v1/items``.
    max_ingest_batch: int = 10_000
    #: How long a built threshold report page is served from its cache (seconds; the key is
    #: the latest calibration runs, the active threshold set and the policy version).
    report_cache_seconds: int = Field(600, ge=0, le=86_400)
    #: Signals that put an item into the GMV / EXP_V queues when nothing else routed it.
    gmv_top_threshold: float = 10_000.0
    exposure_top_threshold: float = 50_000.0
    #: Share of automatic decisions sent to people for a spot check, per band (``auto_ok``,
    #: ``ML_BAD_HIGH``) or source (``similarity``, ``rule``, ``hash``); 0 switches it off.
    spot_check_rates: dict[str, float] = Field(default_factory=lambda: {
        "auto_ok": 0.05, "ML_BAD_HIGH": 0.05, "similarity": 0.05, "rule": 0.02,
        "hash": 0.05})
    #: Time zone used to name daily queues.
    queue_timezone: str = "UTC"

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / "secret_key"

    def resolved_secret_key(self) -> str:
        """``secret_key``, else the content of ``secret_key_file``, else ``""``."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        try:
            return self.secret_key_file.read_text(encoding="utf-8").strip()
        except (FileNotFoundError, NotADirectoryError):
            return ""

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'quorum.sqlite3').as_posix()}"

    def priority_for(self, kind: str) -> int:
        return self.queue_priorities.get(kind, self.default_priority)

    def audience_for(self, kind: str) -> str:
        crowd = kind in self.crowd_queue_kinds or kind == self.moderator_overflow_kind
        return "crowd" if crowd else "moderators"


@lru_cache
def get_settings() -> Settings:
    return Settings()
