"""The always-warm memory quota per IAM user holds when one user's CreateEndpoint calls reach several front
ends at once (each its own store on one database): its check runs in the insert's transaction, under the
user's lock, and counts the endpoints still Creating (their configuration read in that transaction too).
The race is made certain: each insert waits a moment after writing its row and before it checks."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from sqlalchemy import event

from zeroscale.control import Arns, EndpointConfigs, Models
from zeroscale.control.endpoints import Endpoints
from zeroscale.errors import ResourceLimitExceeded
from zeroscale.store import Store

from .fakes import ACCOUNT, REGION, FakeClock
from .test_endpoints import FakeDeployer, FakeFleet

FRONT_ENDS = 4
USER = "AIDAALICE"


def _front_end(store: Store, arns: Arns, clock: FakeClock) -> Endpoints:

    @event.listens_for(store._engine, "after_cursor_execute")
    def pause(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO RESOURCES"):
            time.sleep(0.05)

    models = Models(store, arns, clock)
    deployer = FakeDeployer()
    deployer.delay_s = 30.0  # still Creating when the others check: held by its configuration
    return Endpoints(
        store,
        arns,
        models,
        EndpointConfigs(store, arns, models, clock),
        deployer,
        FakeFleet(),
        clock,
        settle_s=0.0,
        creator=lambda: USER,
        warm_mb_per_user=2048,
    )


def test_one_users_creates_on_several_front_ends_at_once_keep_its_warm_memory(db_url: str) -> None:
    arns, clock = Arns(region=REGION, account_id=ACCOUNT), FakeClock()
    setup = Store(db_url, creator=lambda: USER)
    models = Models(setup, arns, clock)
    models.create({"ModelName": "m", "PrimaryContainer": {"Image": "sklearn"}})
    sc = {"MemorySizeInMB": 1024, "MaxConcurrency": 2, "ProvisionedConcurrency": 1}  # 1 GB warm
    EndpointConfigs(setup, arns, models, clock).create(
        {
            "EndpointConfigName": "c",
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "m", "ServerlessConfig": sc}],
        }
    )
    stores = [Store(db_url, creator=lambda: USER) for _ in range(FRONT_ENDS)]
    front_ends = [_front_end(store, arns, clock) for store in stores]
    start = threading.Barrier(FRONT_ENDS)
    created: list[str] = []
    refused: list[str] = []

    async def create(endpoints: Endpoints, name: str) -> None:
        start.wait()
        try:
            await endpoints.create({"EndpointName": name, "EndpointConfigName": "c"})
            created.append(name)
        except ResourceLimitExceeded as exc:
            refused.append(exc.message)
        finally:
            await endpoints.close()

    threads = [
        threading.Thread(target=asyncio.run, args=(create(e, f"ep{n}"),)) for n, e in enumerate(front_ends)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(created), len(refused)) == (2, FRONT_ENDS - 2)
    assert all(
        message.startswith(
            "The service limit 'Always-warm memory per IAM user' is 2048 MB, with current utilization of "
            "2048 MB and a request delta of 1024 MB"
        )
        for message in refused
    ), refused
    assert sorted(r.name for r in setup.list("endpoint")) == sorted(created)
    for store in [setup, *stores]:
        store.close()
