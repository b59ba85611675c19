"""Login protection settings (``QUORUM_LOGIN_*``): rate limits and where they are counted."""

from __future__ import annotations

from functools import lru_cache

from limits import parse_many
from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class LoginSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUORUM_LOGIN_", extra="ignore")

    #: Failed logins allowed per account (the username as typed), in the ``limits``
    #: notation; several limits are separated by ``;``. Past it, even the right
    #: password is refused (429) until the window ends.
    limit_per_account: str = "5/minute;20/hour"
    #: Failed logins allowed per client address (behind a proxy: the address it forwards,
    #: with uvicorn's ``--proxy-headers``).
    limit_per_address: str = "20/minute;100/hour"
    #: Where the counters live: ``auto`` (``memory://`` on SQLite, ``database`` on
    #: PostgreSQL), ``database`` (Quorum's own database: shared by every worker process
    #: and replica, no extra service), ``memory://`` (one process only), or a ``limits``
    #: storage URI such as ``redis://host:6379`` (needs the ``redis`` package).
    rate_limit_storage: str = "auto"

    @field_validator("limit_per_account", "limit_per_address")
    @classmethod
    def _parses(cls, v: str) -> str:
        try:
            parse_many(v)
        except ValueError as exc:
            raise ValueError(f"not a rate limit such as '5/minute;20/hour': {v!r}") from exc
        return v


@lru_cache
def get_login_settings() -> LoginSettings:
    return LoginSettings()
