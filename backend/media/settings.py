"""Image proxy settings (``QUORUM_IMAGE_PROXY_*``): which hosts item images may come from."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.media.fetch import FetchPolicy


class ImageProxySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUORUM_IMAGE_PROXY_", extra="ignore")

    #: Hosts Quorum fetches item images from (JSON list): names, ``*.example.com``,
    #: ``*`` (any public host), IP addresses or networks. Private, loopback and
    #: link-local addresses are fetched only when their address or network is listed.
    #: Empty (the default): remote item images are not shown.
    hosts: list[str] = Field(default_factory=list)
    #: Largest image fetched, in bytes.
    max_bytes: int = Field(5_000_000, gt=0, le=50_000_000)
    #: Time allowed for one whole download, in seconds.
    timeout_s: float = Field(5.0, gt=0, le=60)
    #: Redirects followed (each target checked like the first URL).
    max_redirects: int = Field(3, ge=0, le=10)

    def policy(self) -> FetchPolicy:
        return FetchPolicy(allow_hosts=tuple(self.hosts), max_bytes=self.max_bytes,
                           timeout_s=self.timeout_s, max_redirects=self.max_redirects)


@lru_cache
def get_image_proxy_settings() -> ImageProxySettings:
    return ImageProxySettings()
