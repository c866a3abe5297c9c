from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from zeroscale.control import Arns, EndpointConfigs, Models
from zeroscale.store import Store

from .fakes import ACCOUNT, REGION, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'zeroscale.db'}")
    yield s
    s.close()


@pytest.fixture
def arns() -> Arns:
    return Arns(region=REGION, account_id=ACCOUNT)


@pytest.fixture
def models(store: Store, arns: Arns, clock: FakeClock) -> Models:
    return Models(store, arns, clock)


@pytest.fixture
def configs(store: Store, arns: Arns, models: Models, clock: FakeClock) -> EndpointConfigs:
    return EndpointConfigs(store, arns, models, clock)
