"""Where the crowd is: Toloka (``QUORUM_CROWD_TOLOKA_URL``) or a local emulator for this run."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.crowdwork.common import emulator_id_base
from backend.crowdwork.service import CrowdRuntime, PullSummary, get_pool, pull_pool
from backend.crowdwork.settings import CrowdSettings
from backend.db import get_sessionmaker
from backend.decisions.models import ItemStatus
from backend.items.models import Item
from backend.policy import Policy
from backend.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # toloka-kit imports pkg_resources
    from crowd.emulator import Emulator
    from crowd.store import MemoryStore
    from crowd.toloka import make_client


@dataclass
class Crowd:
    """A runtime plus, offline, the emulator whose simulated workers answer."""

    runtime: CrowdRuntime
    emulator: Emulator | None = None

    @property
    def is_local(self) -> bool:
        return self.emulator is not None


def best_known_labels(*, session: Session) -> dict[str, str]:
    """What simulated workers take as the truth offline: golden labels, else current labels."""
    truth = dict(session.execute(select(ItemStatus.item_id, ItemStatus.label)
                                 .where(ItemStatus.label.is_not(None))).tuples().all())
    truth.update(session.execute(select(Item.id, Item.golden_label)
                                 .where(Item.golden_label.is_not(None))).tuples().all())
    return {str(k): str(v) for k, v in truth.items()}


@contextmanager
def open_crowd(*, settings: Settings, crowd: CrowdSettings, policy: Policy,
               truth: Mapping[str, str] | None = None, database_url: str | None = None
               ) -> Iterator[Crowd]:
    """Toloka when ``crowd.toloka_url`` is set, else a loopback `Emulator` with
    ``crowd.emulator_workers`` simulated workers answering ``truth`` (item id → label;
    a pair task's truth follows from its two items').

    The emulator lives for this run only: its ids continue after those recorded
    (`emulator_id_base`), and push records what it created on it in memory, not in the
    database (a record of a previous run's emulator would point at nothing)."""
    sessions = get_sessionmaker(database_url or settings.resolved_database_url)
    if crowd.toloka_url:
        check_public_media_url(crowd.toloka_url)
        client = make_client(url=crowd.toloka_url,
                             token=crowd.toloka_token.get_secret_value() or "none",
                             retries=crowd.request_retries, timeout=crowd.request_timeout_s)
        yield Crowd(CrowdRuntime(client=client, sessions=sessions, settings=settings,
                                 crowd=crowd, policy=policy, toloka_url=crowd.toloka_url))
        return
    with sessions() as session:
        base = emulator_id_base(session=session)
    with Emulator(seed=crowd.emulator_seed, workers=crowd.emulator_workers,
                  truth=truth, id_base=base) as emu:
        client = make_client(url=emu.url, retries=crowd.request_retries,
                             timeout=crowd.request_timeout_s)
        yield Crowd(CrowdRuntime(client=client, sessions=sessions, settings=settings,
                                 crowd=crowd, policy=policy, store=MemoryStore(),
                                 toloka_url=emu.url, local_emulator=True),
                    emulator=emu)


def _local_host(host: str) -> bool:
    """A name or address Toloka's workers cannot reach (the image fetcher's own test of
    an address: `backend.media.fetch`)."""
    from backend.media.fetch import _ip, _public

    if host in ("localhost", "") or host.endswith(".localhost"):
        return True
    ip = _ip(host)
    return ip is not None and not _public(ip)


def check_public_media_url(toloka_url: str) -> None:
    """Refuse to work a remote Toloka while task images would point at this machine.

    Pushed tasks carry signed image URLs under ``QUORUM_MEDIA_PUBLIC_BASE_URL``; its
    default (``http://127.0.0.1:8000``) is right for the emulator and unreachable for
    Toloka's workers. A Toloka on loopback (an emulator run standalone) is let through."""
    from urllib.parse import urlsplit

    from backend.errors import ValidationFailed
    from backend.media.settings import get_media_settings

    toloka_host = urlsplit(toloka_url).hostname or ""
    base = get_media_settings().public_base_url
    if not _local_host(toloka_host) and _local_host(urlsplit(base).hostname or ""):
        raise ValidationFailed(
            f"QUORUM_MEDIA_PUBLIC_BASE_URL is {base}, an address Toloka's workers cannot "
            f"open, while the crowd is {toloka_url}: set it to Quorum's public address "
            "(the signed image URLs in every task start with it)")


def work_rounds(crowd: Crowd, *, pool_id: int, max_rounds: int) -> list[PullSummary]:
    """Offline: let the simulated workers answer, then pull; until the pool is closed."""
    rt = crowd.runtime
    rounds: list[PullSummary] = []
    for _ in range(max_rounds):
        with rt.sessions() as session:
            toloka_id = get_pool(session=session, pool_id=pool_id).toloka_pool_id
        if crowd.emulator is not None and toloka_id:
            crowd.emulator.work(toloka_id)
        rounds.append(pull_pool(rt=rt, pool_id=pool_id))
        if rounds[-1].state == "closed":
            break
    return rounds
