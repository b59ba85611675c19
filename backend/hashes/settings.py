"""Settings of the hash banks and PDQ image reuse (``QUORUM_HASH_*``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class HashSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUORUM_HASH_", extra="ignore")

    #: Compute PDQ hashes of the items' local images and match them at routing (banks and
    #: reuse of past verdicts). Off: no image hashing at all.
    enabled: bool = True
    #: Hamming distance (of 256 bits) a bank match may have before a calibration run sets
    #: one; a bank decides only once calibration backs its distance (shadow until then).
    bank_distance: int = Field(31, ge=0, le=64)
    #: Hamming distance for reusing a past human verdict of a near-duplicate image, before
    #: calibration sets one (shadow until backed).
    reuse_distance: int = Field(16, ge=0, le=64)
    #: PDQ quality (0-100) below which an image's hash is not used (flat images).
    min_quality: int = Field(50, ge=0, le=100)
    #: Most hashes one import (CLI file or API call) may hold.
    max_import: int = Field(1_000_000, ge=1)


@lru_cache
def get_hash_settings() -> HashSettings:
    return HashSettings()
