"""Working a remote Toloka with task image URLs that point at this machine is refused
with a sentence (the default public base URL is loopback: right for the emulator only)."""

from __future__ import annotations

import pytest

from backend.crowdwork.runtime import check_public_media_url
from backend.errors import ValidationFailed
from backend.media.settings import get_media_settings


@pytest.fixture
def base_url(monkeypatch):  # noqa: ANN001, ANN201
    def set_to(value: str) -> None:
        monkeypatch.setenv("QUORUM_MEDIA_PUBLIC_BASE_URL", value)
        get_media_settings.cache_clear()

    yield set_to
    get_media_settings.cache_clear()


def test_remote_toloka_with_a_loopback_image_base_is_refused(base_url):  # noqa: ANN001
    base_url("http://127.0.0.1:8000")
    with pytest.raises(ValidationFailed, match="QUORUM_MEDIA_PUBLIC_BASE_URL is "
                                               "http://127.0.0.1:8000"):
        check_public_media_url("https://toloka.dev")
    base_url("http://10.0.0.5:8000")  # a private address is no better
    with pytest.raises(ValidationFailed, match="cannot open"):
        check_public_media_url("https://toloka.dev")


def test_a_public_base_or_a_local_emulator_is_let_through(base_url):  # noqa: ANN001
    base_url("https://quorum.example.com")
    check_public_media_url("https://toloka.dev")
    base_url("http://127.0.0.1:8000")
    check_public_media_url("http://127.0.0.1:45123")  # an emulator run standalone
