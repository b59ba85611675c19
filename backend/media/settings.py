"""Media settings: which hosts item images may be fetched from, by the moderators' image
proxy (``QUORUM_IMAGE_PROXY_*``) and by the embed worker (``QUORUM_IMAGE_FETCH_*``), and
the signed image URLs handed to the crowd (``QUORUM_MEDIA_*``)."""

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


class ImageFetchSettings(BaseSettings):
    """The embed worker's image fetching: the same guards as the proxy, a list of its own."""

    model_config = SettingsConfigDict(env_prefix="QUORUM_IMAGE_FETCH_", extra="ignore")

    #: Hosts the embed worker downloads http(s) item images from (same forms as
    #: ``QUORUM_IMAGE_PROXY_HOSTS``). Empty (the default): no remote image is fetched;
    #: each such item records why and is embedded from its text.
    hosts: list[str] = Field(default_factory=list)
    max_bytes: int = Field(5_000_000, gt=0, le=50_000_000)
    timeout_s: float = Field(5.0, gt=0, le=60)
    max_redirects: int = Field(3, ge=0, le=10)
    #: Downloads run at the same time by one routing batch (threads).
    workers: int = Field(8, ge=1, le=64)

    def policy(self) -> FetchPolicy:
        return FetchPolicy(allow_hosts=tuple(self.hosts), max_bytes=self.max_bytes,
                           timeout_s=self.timeout_s, max_redirects=self.max_redirects,
                           setting="QUORUM_IMAGE_FETCH_HOSTS")


class MediaSettings(BaseSettings):
    """Signed image URLs (``/api/v1/media/signed/{token}``) for people outside Quorum."""

    model_config = SettingsConfigDict(env_prefix="QUORUM_MEDIA_", extra="ignore")

    #: Where Quorum is reachable from outside (Toloka's workers' browsers), e.g.
    #: ``https://quorum.example.com``; signed image URLs start with it. The default is
    #: ``quorum serve``'s own address, which only the local emulator can use.
    public_base_url: str = Field("http://127.0.0.1:8000", max_length=500)
    #: How long a signed image URL works, in seconds (a pool's lifetime, at least).
    signed_url_ttl_seconds: int = Field(7 * 86_400, ge=60, le=90 * 86_400)


@lru_cache
def get_image_proxy_settings() -> ImageProxySettings:
    return ImageProxySettings()


@lru_cache
def get_image_fetch_settings() -> ImageFetchSettings:
    return ImageFetchSettings()


@lru_cache
def get_media_settings() -> MediaSettings:
    return MediaSettings()
