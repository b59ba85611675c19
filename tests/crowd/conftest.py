from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import pandas as pd
import pytest

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from crowd.config import CrowdConfig  # noqa: E402
from crowd.emulator import Emulator  # noqa: E402
from crowd.push import PushPlan  # noqa: E402
from crowd.toloka import make_client  # noqa: E402

LABELS = ["ok", "restricted", "adult", "prohibited"]
POLICY = [{"key": k, "title": k.title()} for k in LABELS]


@pytest.fixture
def truth() -> dict[str, str]:
    return {f"item-{i:03d}": LABELS[(i * 7) % 4] for i in range(60)}


@pytest.fixture
def items(truth: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": list(truth),
            "title": [f"Listing {k}" for k in truth],
            "description": "a thing",
            "price": 9.99,
            "link": "https://shop.example/item",
        }
    )


@pytest.fixture
def golden() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"gold-{i}" for i in range(8)],
            "title": "control",
            "label": [LABELS[i % 4] for i in range(8)],
        }
    )


@pytest.fixture
def plan(items: pd.DataFrame, golden: pd.DataFrame) -> PushPlan:
    return PushPlan(
        key="NEW_PRODUCTS_2024-01-01_1",
        policy=POLICY,
        items=items,
        golden=golden,
        config=CrowdConfig(tasks_per_suite=5),
    )


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., Emulator]]:
    started: list[Emulator] = []

    def make(**kwargs: object) -> Emulator:
        emu = Emulator(**kwargs).start()  # type: ignore[arg-type]
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def client_for() -> Callable[..., object]:
    def make(emu: Emulator, **kwargs: object) -> object:
        return make_client(url=emu.url, **{"timeout": 2.0, "backoff": 0.01, **kwargs})  # type: ignore[arg-type]

    return make
